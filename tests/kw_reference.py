"""Shared by the KernelWarehouse parity test and the script that records the authors' outputs.

``tests/data/make_kw_reference.py`` builds the authors' models (OSVAI/KernelWarehouse), fills their
state dicts with :func:`seeded_state`, and records inputs and outputs in ``tests/data/kw_reference.pt``;
``tests/test_kernelwarehouse.py`` fills fmdconv's models, converted to the authors' layout, the same
way (same keys, same shapes, same values), so the reference file needs no weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SEED = 2024
# (in, out, kernel, stride, groups, cell_num_ratio, cell plane ratio) of the single-layer cases.
LAYER_CASES = (
    (16, 32, 3, 2, 1, 4.0, 1.0),
    (16, 16, 1, 1, 1, 0.5, 0.5),
    (16, 16, 3, 1, 16, 1.0, 1.0),
    (24, 8, 3, 1, 1, 0.25, 0.5),
)
# (model, kw_ratio, width) of the whole-model cases, and tau in all cases.
MODEL_CASES = (
    ("resnet18", "1/4", 1.0),
    ("resnet50", "1/2", 1.0),
    ("mobilenet_v2", "4", 0.5),
    ("mobilenet_v2", "1/2", 0.5),
)
TAU = 0.3


def seeded_state(state: dict[str, Tensor], seed: int = SEED) -> dict[str, Tensor]:
    """Deterministic values for every floating tensor of ``state``, keyed by sorted name and shape.

    Weights N(0, 1/fan_in), BatchNorm scales 1 + N(0, 0.2^2), running variances U(0.5, 2), other
    vectors N(0, 0.2^2); integer buffers are kept.
    """
    generator = torch.Generator().manual_seed(seed)
    filled = dict(state)
    for key in sorted(state):
        value = state[key]
        if not value.is_floating_point():
            continue
        shape = value.shape
        if value.dim() >= 2:
            new = torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))
        elif key.endswith("running_var"):
            new = 0.5 + 1.5 * torch.rand(shape, generator=generator)
        elif key.endswith("weight"):
            new = 1.0 + 0.2 * torch.randn(shape, generator=generator)
        else:
            new = 0.2 * torch.randn(shape, generator=generator)
        filled[key] = new.to(value.dtype)
    return filled
