"""The attention paths of dynamic convolutions.

All act on the globally average-pooled input, a (B, C_in) matrix, and return logits; the layer
divides them by its temperatures and normalises them (see :mod:`fmdconv.layers.dynamic_conv`).
The authors' code uses 1x1 convolutions on (B, C, 1, 1); these linear layers compute the same
numbers and :mod:`fmdconv.compat` converts between the two weight layouts.

Initialisation (``attention_init``): ``"zero"`` (the default) zero-initialises the last layer of
every path (the gate trunk's heads, the kernel MLP's second layer, CondConv's routing FC), so every
gate starts at 1/2 and every kernel softmax uniform, and the logits grow only as far as training
pushes them; ``"authors"`` initialises every layer Kaiming-normal (fan_out), as the authors' code
does, which gives logits of tens that the initial temperature of 30-34 hides until it reaches 1
(docs/design.md, section 8, docs/training.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmdconv.layers.helpers import batch_norm

ATTENTION_INITS = ("zero", "authors")


def check_attention_init(attention_init: str, owner: str) -> str:
    """``attention_init`` itself, or a ValueError naming ``owner`` and the accepted values."""
    if attention_init not in ATTENTION_INITS:
        raise ValueError(
            f"{owner}: attention_init must be one of {', '.join(ATTENTION_INITS)}, got {attention_init!r}"
        )
    return attention_init


def init_attention_linear(layer: nn.Linear, zero: bool = False) -> None:
    """Zero bias; weight Kaiming-normal (fan_out, relu) as in the ODConv/FMDConv code, or zero."""
    if zero:
        nn.init.zeros_(layer.weight)
    else:
        nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class GateTrunk(nn.Module):
    """ODConv's shared trunk, FC -> BN -> ReLU, with one linear head per gate.

    ``heads`` maps a head name (``input``, ``output``, ``spatial``, ``kernel``) to its size;
    ``attention_init="zero"`` zero-initialises the heads (see the module's docstring).
    At batch size 1 in training mode, the batch statistics of a single pooled vector are undefined
    (the variance is 0 and the normalised vector is all zeros), so the BatchNorm normalises with its
    running statistics and leaves them unchanged for that step. The authors' code fails there.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        heads: dict[str, int],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        attention_init: str = "zero",
    ) -> None:
        super().__init__()
        self.attention_init = check_attention_init(attention_init, type(self).__name__)
        factory = {"device": device, "dtype": dtype}
        self.fc = nn.Linear(in_channels, hidden, bias=False, **factory)
        self.bn = nn.BatchNorm1d(hidden, **factory)
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, size, **factory) for name, size in heads.items()})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_attention_linear(self.fc)
        self.bn.reset_parameters()
        for head in self.heads.values():
            init_attention_linear(head, zero=self.attention_init == "zero")

    def forward(self, pooled: Tensor, names: tuple[str, ...] | None = None) -> Tensor:
        """The logits of the heads ``names`` (default: all, in :attr:`heads` order), side by side.

        One matrix product computes every head (their weights concatenated at call time, so the
        parameters keep one ``Linear`` per head); :meth:`split` cuts the result per head.
        """
        hidden = self.fc(pooled)
        hidden = batch_norm(self.bn, hidden)
        # threshold(h, 0, 0) is ReLU whose backward reads its input: no saved copy of the output.
        hidden = F.threshold(hidden, 0.0, 0.0)
        heads = [self.heads[name] for name in (self.heads if names is None else names)]
        if len(heads) == 1:
            return heads[0](hidden)
        weight = torch.cat([head.weight for head in heads])
        bias = torch.cat([head.bias for head in heads])
        return torch.addmm(bias, hidden, weight.t())

    def split(self, logits: Tensor, names: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """:meth:`forward`'s logits for ``names`` as one (B, size) tensor per head."""
        names = tuple(self.heads) if names is None else names
        sizes = [self.heads[name].out_features for name in names]
        return dict(zip(names, logits.split(sizes, dim=1), strict=True))


class KernelMLP(nn.Module):
    """DyConv's kernel-attention path, FC (no bias) -> ReLU -> FC; FMDConv's separate kernel path.

    ``attention_init="zero"`` zero-initialises the second FC (see the module's docstring).
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        kernel_num: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        attention_init: str = "zero",
    ) -> None:
        super().__init__()
        self.attention_init = check_attention_init(attention_init, type(self).__name__)
        factory = {"device": device, "dtype": dtype}
        self.fc1 = nn.Linear(in_channels, hidden, bias=False, **factory)
        self.fc2 = nn.Linear(hidden, kernel_num, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_attention_linear(self.fc1)
        init_attention_linear(self.fc2, zero=self.attention_init == "zero")

    def forward(self, pooled: Tensor) -> Tensor:
        return self.fc2(F.threshold(self.fc1(pooled), 0.0, 0.0))  # ReLU, see GateTrunk.forward


class KernelRouting(nn.Module):
    """CondConv's routing function: one FC from the pooled input to one logit per expert.

    ``attention_init="zero"`` zero-initialises the FC: every routing weight starts at 1/2.
    """

    def __init__(
        self,
        in_channels: int,
        kernel_num: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        attention_init: str = "zero",
    ) -> None:
        super().__init__()
        self.attention_init = check_attention_init(attention_init, type(self).__name__)
        self.fc = nn.Linear(in_channels, kernel_num, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_attention_linear(self.fc, zero=self.attention_init == "zero")

    def forward(self, pooled: Tensor) -> Tensor:
        return self.fc(pooled)


class SharedRouting(KernelRouting):
    """CondConv's routing function computed once per block and shared by the block's convolutions.

    Yang et al. (NeurIPS 2019) share the routing weights r = sigmoid(FC(GAP(x))) of the block input
    among the convolutions of a block (their MobileNetV2). Build those convolutions with
    ``shared_routing=True`` and pass them ``r`` as ``kernel_attention``.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Routing weights (B, n) for a block input (B, C, H, W), or for already pooled (B, C)."""
        if x.dim() not in (2, 4) or x.shape[1] != self.fc.in_features:
            raise ValueError(
                f"SharedRouting: expected a block input (B, {self.fc.in_features}, H, W) or pooled "
                f"(B, {self.fc.in_features}), got shape {tuple(x.shape)}"
            )
        pooled = x.mean((2, 3)) if x.dim() == 4 else x
        return torch.sigmoid(self.fc(pooled))
