"""How many aten ops one layer call dispatches (docs/speed.md, "Ops per call"): a ceiling per method,
forward and backward, so the per-call overhead cannot creep back. Deterministic: no timing."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fmdconv import CondConv2d, DyConv2d, FMDConv2d, ODConv2d


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched inside the ``with`` block, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())


def count_train_call(layer: nn.Module, x: torch.Tensor) -> tuple[OpCounter, OpCounter]:
    """Ops of one training-mode forward and of the backward of its sum (gradients start unset, as
    after ``zero_grad()``; the input needs a gradient, as an inner layer's does)."""
    layer.train()
    with OpCounter() as forward:
        y = layer(x)
    total = y.sum()
    with OpCounter() as backward:
        total.backward()
    return forward, backward


# method -> (forward, backward) ceilings for a (2, 8, 8, 8) input, 3x3, padding 1, n = 4.
CEILINGS = {
    nn.Conv2d: (1, 6),
    CondConv2d: (13, 37),
    DyConv2d: (17, 39),
    ODConv2d: (32, 62),
    FMDConv2d: (34, 70),
}


@pytest.mark.parametrize("method", list(CEILINGS), ids=lambda m: m.__name__)
def test_ops_per_training_call_stay_under_their_ceiling(method):
    layer = method(8, 8, 3, padding=1)
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    forward, backward = count_train_call(layer, x)
    forward_ceiling, backward_ceiling = CEILINGS[method]
    assert forward.total <= forward_ceiling, dict(forward.ops)
    assert backward.total <= backward_ceiling, dict(backward.ops)


def test_disabled_attentions_are_not_computed():
    layer = ODConv2d(8, 8, 3, padding=1)
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    full, _ = count_train_call(layer, x)
    layer.disabled_attentions = {"input", "output", "spatial", "kernel"}
    none, _ = count_train_call(layer, x)
    assert "native_batch_norm" not in none.ops and "sigmoid" not in none.ops  # no trunk at all
    assert none.total < full.total // 2
