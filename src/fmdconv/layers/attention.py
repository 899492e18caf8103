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

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmdconv.layers.conv_primitives import is_exporting

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
        parameters keep one ``Linear`` per head); :meth:`split` cuts the result per head. Where
        autograd records the call, the whole trunk is one node with a hand-written backward
        (:class:`_TrunkLogits`).
        """
        heads = [self.heads[name] for name in (self.heads if names is None else names)]
        norm = self.bn
        # At batch 1 in training: the running statistics, left unchanged (see the class docstring).
        batch_statistics = norm.training and pooled.shape[0] > 1
        momentum = 0.0
        if batch_statistics:
            norm.num_batches_tracked.add_(1)
            momentum = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
        parameters = (self.fc.weight, norm.weight, norm.bias, *(p for h in heads for p in (h.weight, h.bias)))
        if not _records_autograd(pooled, parameters):
            hidden = F.batch_norm(
                self.fc(pooled), norm.running_mean, norm.running_var, norm.weight, norm.bias,
                batch_statistics, momentum, norm.eps,
            )  # fmt: skip
            return _head_logits(F.threshold(hidden, 0.0, 0.0), heads)
        return _TrunkLogits.apply(
            pooled, norm.running_mean, norm.running_var, batch_statistics, momentum, norm.eps, *parameters
        )

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
        """The kernel logits (B, n); one autograd node with a hand-written backward where autograd
        records the call (:class:`_MLPLogits`)."""
        parameters = (self.fc1.weight, self.fc2.weight, self.fc2.bias)
        if not _records_autograd(pooled, parameters):
            return self.fc2(F.threshold(self.fc1(pooled), 0.0, 0.0))  # ReLU, see _TrunkLogits
        return _MLPLogits.apply(pooled, *parameters)


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


def _records_autograd(pooled: Tensor, parameters: tuple[Tensor, ...]) -> bool:
    """Whether an attention path's call is for autograd to record as one node with its hand-written
    backward: where a gradient is wanted, and not while torch.compile traces (it derives its own
    backward), exporting, or under autocast (which the hand-written backward does not replay)."""
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in (pooled, *parameters)):
        return False
    compiling = torch.compiler.is_compiling() or is_exporting()
    return not compiling and not torch.is_autocast_enabled(pooled.device.type)


def _head_logits(hidden: Tensor, heads: list[nn.Linear]) -> Tensor:
    """The logits of ``heads`` on ``hidden``, side by side: one product for all of them."""
    if len(heads) == 1:
        return F.linear(hidden, heads[0].weight, heads[0].bias)
    weight = torch.cat([head.weight for head in heads])
    bias = torch.cat([head.bias for head in heads])
    return torch.addmm(bias, hidden, weight.t())


class _TrunkLogits(torch.autograd.Function):
    """The gate trunk's heads' logits, ``heads(relu(bn(fc(pooled))))``, as one autograd node.

    Autograd would record each step (the products, their transposes, the concatenation of the heads,
    the normalisation, the ReLU) and run a backward for each; this backward computes the same
    gradients with about half the ops. ReLU is ``threshold(h, 0, 0)``, whose backward reads the
    output, so no copy of the pre-activation is kept. Inputs after ``eps``: the trunk FC's weight,
    the BatchNorm's weight and bias, then each head's weight and bias.
    """

    @staticmethod
    def forward(
        ctx: Any,
        pooled: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        batch_statistics: bool,
        momentum: float,
        eps: float,
        fc_weight: Tensor,
        bn_weight: Tensor,
        bn_bias: Tensor,
        *head_parameters: Tensor,
    ) -> Tensor:
        hidden = pooled.mm(fc_weight.t())
        normalised, mean, invstd = torch.native_batch_norm(
            hidden, bn_weight, bn_bias, running_mean, running_var, batch_statistics, momentum, eps
        )
        activated = normalised.relu_()
        weights, biases = head_parameters[::2], head_parameters[1::2]
        weight = torch.cat(weights) if len(weights) > 1 else weights[0]
        bias = torch.cat(biases) if len(biases) > 1 else biases[0]
        # The running statistics enter the backward only where they normalised (not updated by this
        # call, which a later call's update would otherwise invalidate).
        running = (None, None) if batch_statistics else (running_mean, running_var)
        ctx.save_for_backward(pooled, fc_weight, hidden, bn_weight, *running, mean, invstd, activated, weight)
        ctx.batch_statistics, ctx.eps = batch_statistics, eps
        ctx.sizes = [w.shape[0] for w in weights]
        return torch.addmm(bias, activated, weight.t())

    @staticmethod
    def backward(ctx: Any, grad_logits: Tensor) -> tuple[Tensor | None, ...]:
        pooled, fc_weight, hidden, bn_weight, running_mean, running_var, mean, invstd, activated, weight = (
            ctx.saved_tensors
        )
        grad_weight = grad_logits.t().mm(activated)
        grad_bias = grad_logits.sum(0)
        grad_activated = torch.ops.aten.threshold_backward(grad_logits.mm(weight), activated, 0.0)
        grad_hidden, grad_bn_weight, grad_bn_bias = torch.ops.aten.native_batch_norm_backward(
            grad_activated, hidden, bn_weight, running_mean, running_var, mean, invstd,
            ctx.batch_statistics, ctx.eps, [True, True, True],
        )  # fmt: skip
        grad_pooled = grad_hidden.mm(fc_weight) if ctx.needs_input_grad[0] else None
        grad_fc = grad_hidden.t().mm(pooled)
        sizes = ctx.sizes
        if len(sizes) == 1:
            head_grads = [grad_weight, grad_bias]
        else:
            pairs = zip(grad_weight.split(sizes), grad_bias.split(sizes), strict=True)
            head_grads = [grad for pair in pairs for grad in pair]
        return (grad_pooled, None, None, None, None, None, grad_fc, grad_bn_weight, grad_bn_bias, *head_grads)


class _MLPLogits(torch.autograd.Function):
    """The kernel MLP's logits, ``fc2(relu(fc1(pooled)))``, as one autograd node (see
    :class:`_TrunkLogits`)."""

    @staticmethod
    def forward(ctx: Any, pooled: Tensor, fc1_weight: Tensor, fc2_weight: Tensor, fc2_bias: Tensor) -> Tensor:
        activated = pooled.mm(fc1_weight.t()).relu_()
        ctx.save_for_backward(pooled, fc1_weight, fc2_weight, activated)
        return torch.addmm(fc2_bias, activated, fc2_weight.t())

    @staticmethod
    def backward(ctx: Any, grad_logits: Tensor) -> tuple[Tensor | None, ...]:
        pooled, fc1_weight, fc2_weight, activated = ctx.saved_tensors
        grad_fc2 = grad_logits.t().mm(activated)
        grad_hidden = torch.ops.aten.threshold_backward(grad_logits.mm(fc2_weight), activated, 0.0)
        grad_pooled = grad_hidden.mm(fc1_weight) if ctx.needs_input_grad[0] else None
        return grad_pooled, grad_hidden.t().mm(pooled), grad_fc2, grad_logits.sum(0)
