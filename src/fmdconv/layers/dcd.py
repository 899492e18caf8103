"""DCD: dynamic convolution decomposition, a static kernel plus a dynamic residual in a latent space.

Li, Chen, Dai, Liu, Chen, Yu, Yuan, Liu, Chen, Vasconcelos. "Revisiting Dynamic Convolution via
Matrix Decomposition", ICLR 2021. The per-sample kernel is

    W(x) = Λ(x) W0 + P Φ(x) Qᵀ

with a static kernel W0, a dynamic channel-wise scale Λ(x) (C_out), a dynamic L x L matrix Φ(x) in a
latent space of L << C channels, and static projections Q (C_in -> L) and P (L -> C_out). As in the
authors' code (``liyunsheng13/dcd``), the latent path is normalised and keeps an identity branch:

    y = Λ ⊙ (W0 ⊛ x + b) + P (BN2(Φ z) + z),   z = BN1(Qᵀ x)

so in eval mode the per-sample kernel is ``Λ W0 + P (diag(a2) Φ + I) diag(a1) Qᵀ`` (a1, a2 the
BatchNorms' scales; Q and P are 1x1 and act at the centre tap of W0) with a per-sample bias. In
training mode the two BatchNorms use the batch's statistics, as every BatchNorm does (so, as in the
authors' code, a 1x1 map such as the classifier's needs more than one sample per training batch).

Λ and Φ come from one attention path: pool the input to ``pool_size x pool_size``, an FC to
``squeeze_channels``, a self-gate ``y * hsig(FC(y))``, then two heads: ``Λ = hsig(FC(y))`` and
``Φ = FC(y)`` reshaped to L x L, where ``hsig(v) = relu6(v + 3) / 3`` (range [0, 2], 1 at v = 0).
No temperature.

Initialisation (``attention_init``): ``"authors"`` is the DCD code's: Kaiming-normal (fan_out) W0,
Q and P, unit BatchNorms, N(0, 0.01) attention FCs. ``"zero"`` (the default) also zero-initialises
P and the last layer of the Λ head, so the layer starts as its static convolution (Λ = 1, dynamic
residual 0) and the dynamic residual grows from zero, as the other methods' ``"zero"`` starts from a
uniform mixture. With the authors' init the residual ``P (BN2(Φ z) + z)`` starts at the size of the
static output (the two BatchNorms give it unit variance whatever Φ is), which in a narrow network
trained at lr 0.1 makes the first steps' gradients and the eval-mode activations blow up
(docs/models.md, "DCD"). The Φ head is not zeroed: BN2 of an all-zero Φ z has no scale to normalise.

DCD is not a mixture of n kernels, so it is its own module beside
:class:`~fmdconv.layers.DynamicConv2d` rather than a preset of it (see ``docs/models.md``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmdconv.layers.attention import check_attention_init
from fmdconv.layers.helpers import (
    IntPair,
    PaddingArg,
    batch_norm,
    check_int,
    kernel_elements,
    set_conv_arguments,
)

DCD_ATTENTION_NAMES = ("scale", "phi")


def _hard_sigmoid(value: Tensor) -> Tensor:
    """``relu6(v + 3) / 3``: the DCD code's hard sigmoid, in [0, 2] and 1 at 0."""
    return 2.0 * F.hardsigmoid(value)


def check_input_dtype(owner: str, x: Tensor, expected: torch.dtype) -> None:
    """A TypeError naming ``owner`` and the dtype it expects where ``x`` has another one (a floating
    input of another precision passes under autocast, which casts it)."""
    if x.dtype == expected or x.device.type == "meta":
        return
    if x.is_floating_point() and torch.is_autocast_enabled(x.device.type):
        return
    raise TypeError(
        f"{owner}: expected a {expected} input (the dtype of the layer's parameters), got {x.dtype}; "
        f"convert the input (x.to({expected})) or the layer"
    )


class DCDAttention(nn.Module):
    """The attention path of DCD: pooled input -> FC -> self-gate -> Λ (C_out) and Φ (L x L).

    Every FC has no bias, as in the authors' code.
    """

    def __init__(
        self,
        in_features: int,
        squeeze_channels: int,
        latent_dim: int,
        out_channels: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.latent_dim = latent_dim
        self.fc = nn.Linear(in_features, squeeze_channels, bias=False, **factory)
        self.gate = nn.Linear(squeeze_channels, squeeze_channels, bias=False, **factory)
        self.phi = nn.Linear(squeeze_channels, latent_dim * latent_dim, bias=False, **factory)
        self.scale = nn.Linear(squeeze_channels, out_channels, bias=False, **factory)

    def reset_parameters(self) -> None:
        """N(0, 0.01) weights, the DCD MobileNetV2 code's initialisation of its linear layers."""
        for linear in (self.fc, self.gate, self.phi, self.scale):
            nn.init.normal_(linear.weight, 0.0, 0.01)

    def forward(self, pooled: Tensor) -> dict[str, Tensor]:
        """``pooled`` (B, in_features) -> ``scale`` Λ (B, C_out) and ``phi`` Φ (B, L, L)."""
        hidden = self.fc(pooled)
        hidden = hidden * _hard_sigmoid(self.gate(hidden))
        phi = self.phi(hidden).unflatten(1, (self.latent_dim, self.latent_dim))
        return {"scale": _hard_sigmoid(self.scale(hidden)), "phi": phi}


class DCDConv2d(nn.Module):
    """DCD, dynamic convolution decomposition (Li et al., ICLR 2021); a drop-in for nn.Conv2d.

    ``W(x) = Λ(x) W0 + P Φ(x) Qᵀ`` (see the module docstring for the authors' exact form). The
    constructor takes nn.Conv2d's arguments, then DCD's options.

    Args:
        bias: a bias on the static part, scaled by Λ like W0 (default False, as in the DCD code,
            whose convolutions BatchNorm follows; ``None`` means that default).
        groups: must be 1: the latent projections mix all channels, so a grouped kernel cannot hold
            the dynamic part (the DCD code keeps depthwise convolutions static).
        latent_dim: L, the latent channels (default ``int(sqrt(in_channels * pool_size**2))``, the
            rule of the DCD code's ResNets).
        pool_size: the attention path pools the input to ``pool_size x pool_size`` (default 1; the
            DCD code uses 2 for ResNet-18/34's convolutions and MobileNetV2's expansions).
        fc_squeeze: the attention path's width is ``max(in_channels * pool_size**2, L**2) //
            fc_squeeze``, at least 4 (default 16) ...
        squeeze_channels: ... unless given here (the DCD classifier uses 32).
        attention_init: ``"zero"`` (default) or ``"authors"`` (see the module docstring).

    Attributes:
        weight: the static kernel W0, (C_out, C_in, kh, kw) as nn.Conv2d's; ``bias`` (C_out) or None.
        latent_in: Qᵀ, (L, C_in); ``latent_out``: P, (C_out, L).
        latent_norm, mix_norm: BN1 and BN2 of the latent path.
        attention: the :class:`DCDAttention` path.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: PaddingArg = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool | None = None,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        latent_dim: int | None = None,
        pool_size: int = 1,
        fc_squeeze: int | None = None,
        squeeze_channels: int | None = None,
        attention_init: str = "zero",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.attention_init = check_attention_init(attention_init, name)
        check_int(name, "in_channels", in_channels)
        check_int(name, "out_channels", out_channels)
        if groups != 1:
            raise ValueError(
                f"{name}: groups must be 1 (the latent projections mix all channels), got {groups!r}"
            )
        check_int(name, "pool_size", pool_size)
        if fc_squeeze is not None and squeeze_channels is not None:
            raise ValueError(f"{name}: give fc_squeeze or squeeze_channels, not both")
        pooled_features = in_channels * pool_size * pool_size
        if latent_dim is None:
            latent_dim = max(1, math.isqrt(pooled_features))
        check_int(name, "latent_dim", latent_dim)
        if squeeze_channels is None:
            fc_squeeze = 16 if fc_squeeze is None else check_int(name, "fc_squeeze", fc_squeeze)
            squeeze_channels = max(4, max(pooled_features, latent_dim * latent_dim) // fc_squeeze)
        check_int(name, "squeeze_channels", squeeze_channels)

        self.in_channels = in_channels
        self.out_channels = out_channels
        self._explicit_padding, _ = set_conv_arguments(
            self, kernel_size, stride, padding, dilation, groups, padding_mode
        )
        self.latent_dim = latent_dim
        self.pool_size = pool_size
        self.squeeze_channels = squeeze_channels

        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.latent_in = nn.Parameter(torch.empty(latent_dim, in_channels, **factory))
        self.latent_out = nn.Parameter(torch.empty(out_channels, latent_dim, **factory))
        self.latent_norm = nn.BatchNorm2d(latent_dim, **factory)
        self.mix_norm = nn.BatchNorm2d(latent_dim, **factory)
        self.attention = DCDAttention(pooled_features, squeeze_channels, latent_dim, out_channels, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out, relu) W0, Q and P, zero bias, unit BatchNorms, N(0, 0.01) FCs;
        with ``attention_init="zero"`` P and the Λ head's FC are then zeroed (Λ = 1, no residual)."""
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.latent_in, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.latent_out, mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        for norm in (self.latent_norm, self.mix_norm):
            norm.reset_running_stats()
            norm.reset_parameters()
        self.attention.reset_parameters()
        if self.attention_init == "zero":
            nn.init.zeros_(self.latent_out)
            nn.init.zeros_(self.attention.scale.weight)

    @property
    def available_attentions(self) -> tuple[str, ...]:
        """The attentions this layer computes: ``scale`` (Λ) and ``phi`` (Φ)."""
        return DCD_ATTENTION_NAMES

    def _batched(self, x: Tensor) -> tuple[Tensor, bool]:
        name = type(self).__name__
        unbatched = x.dim() == 3
        x = x.unsqueeze(0) if unbatched else x
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name}: expected an input (B, {self.in_channels}, H, W) or "
                f"({self.in_channels}, H, W), got shape {tuple(x.shape)}"
            )
        check_input_dtype(name, x, self.weight.dtype)
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        left, right, top, bottom = self._explicit_padding
        minimum = (max(1, dh * (kh - 1) + 1 - top - bottom), max(1, dw * (kw - 1) + 1 - left - right))
        if x.shape[-2] < minimum[0] or x.shape[-1] < minimum[1]:
            raise ValueError(
                f"{name}: the input map is too small: kernel_size={self.kernel_size}, dilation="
                f"{self.dilation} and padding={self.padding} need an input of at least "
                f"{minimum[0]}x{minimum[1]} (H x W), got {x.shape[-2]}x{x.shape[-1]}"
            )
        return x, unbatched

    def _attentions(self, x: Tensor) -> dict[str, Tensor]:
        pooled = F.adaptive_avg_pool2d(x, self.pool_size).flatten(1)
        return self.attention(pooled)

    def attentions(self, x: Tensor) -> dict[str, Tensor]:
        """Λ and Φ for input ``x``: ``scale`` (B, C_out) and ``phi`` (B, L, L) (no batch dim for 3-D x)."""
        x, unbatched = self._batched(x)
        attentions = self._attentions(x)
        return {k: v[0] for k, v in attentions.items()} if unbatched else attentions

    def _padded_and_centre(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[int, int] | str]:
        """The input of the static convolution, that of the latent 1x1 (aligned with the kernel's
        centre tap), and the padding the static convolution applies itself."""
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        before = (dh * ((kh - 1) // 2), dw * ((kw - 1) // 2))
        after = (dh * (kh - 1) - before[0], dw * (kw - 1) - before[1])
        left, right, top, bottom = self._explicit_padding
        if self.padding_mode == "zeros" and left == right and top == bottom:
            # The convolution pads itself; F.pad crops where the padding is less than the centre offset.
            shifts = (left - before[1], right - after[1], top - before[0], bottom - after[0])
            centre = F.pad(x, shifts) if any(shifts) else x
            return x, centre, (top, left)
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        padded = F.pad(x, self._explicit_padding, mode=mode) if any(self._explicit_padding) else x
        height, width = padded.shape[-2:]
        centre = padded[..., before[0] : height - after[0], before[1] : width - after[1]]
        return padded, centre, (0, 0)

    def forward(self, x: Tensor) -> Tensor:
        """Convolve ``x`` (B, C_in, H, W) or (C_in, H, W)."""
        x, unbatched = self._batched(x)
        attentions = self._attentions(x)
        conv_input, centre, padding = self._padded_and_centre(x)
        static = F.conv2d(conv_input, self.weight, self.bias, self.stride, padding, self.dilation)
        latent = F.conv2d(centre, self.latent_in[:, :, None, None], None, self.stride)
        latent = batch_norm(self.latent_norm, latent)
        mixed = torch.matmul(attentions["phi"], latent.flatten(2)).view_as(latent)
        latent = batch_norm(self.mix_norm, mixed) + latent
        dynamic = F.conv2d(latent, self.latent_out[:, :, None, None])
        y = attentions["scale"][:, :, None, None] * static + dynamic
        return y[0] if unbatched else y

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"latent_dim={self.latent_dim}, pool_size={self.pool_size}, "
            f"squeeze_channels={self.squeeze_channels}"
        )
        if self.padding not in ((0, 0), "valid"):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.bias is not None:
            text += ", bias=True"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        if self.attention_init != "zero":
            text += f", attention_init={self.attention_init!r}"
        return text


# DCD in the backbones, as the DCD code lays it out (docs/models.md, "DCD"). Its classifier
# (``DYCls`` in the DCD code): latent 32, attention width 32, with a bias.
DCD_CLASSIFIER_OPTIONS: dict[str, int] = {"latent_dim": 32, "squeeze_channels": 32}
# ResNet-18/34's DCD convolutions pool the input to 2x2 for their attention (``conv_basic_dy``).
DCD_POOL_SIZE: dict[str, int] = {"resnet18": 2, "resnet34": 2}


def dcd_mobilenet_v2_latent(in_channels: int, out_channels: int) -> tuple[int, int]:
    """(latent L, pool size) of a DCD 1x1 convolution of MobileNetV2, as the DCD code's ``DYModule``.

    Expansions (``in < out``) pool to 2x2 and start from a reduction of 8, projections pool to 1x1
    and start from 2; ``L = min(in * pool**2, out) // reduction``, the reduction doubling while
    ``L**2 > 2 * in * pool**2``; L is at least 4.
    """
    pool, reduction = (2, 8) if in_channels < out_channels else (1, 2)
    pooled = in_channels * pool * pool
    latent = min(pooled, out_channels) // reduction
    while latent * latent > 2 * pooled:
        reduction *= 2
        latent = min(pooled, out_channels) // reduction
    return max(latent, 4), pool


def dcd_layer_options(model: str | None, in_channels: int, out_channels: int) -> dict[str, int]:
    """The DCD code's per-layer options for a convolution of ``model``: latent size and pooling."""
    if model == "mobilenet_v2":
        latent, pool = dcd_mobilenet_v2_latent(in_channels, out_channels)
        return {"latent_dim": latent, "pool_size": pool}
    return {"pool_size": DCD_POOL_SIZE.get(model or "", 1)}


def dcd_mobilenet_v2_fc_squeeze(width: float) -> int:
    """DCD's default ``fc_squeeze`` for MobileNetV2 at ``width``: 16 from 0.75 up, else 8.

    The ODConv paper's DCD rows (5.72M at 1.0x, 4.08M at 0.75x, 3.06M at 0.5x) are the DCD code's
    counts with fc_squeeze 16, 16 and 8 (docs/design.md, section 10; tested in ``tests/test_dcd.py``).
    """
    return 16 if width >= 0.75 else 8


def dcd_backbone_options(model: str, width: float) -> dict[str, int]:
    """Options every DCD layer of backbone ``model`` at ``width`` gets unless the user sets them."""
    return {"fc_squeeze": dcd_mobilenet_v2_fc_squeeze(width)} if model == "mobilenet_v2" else {}


def init_dcd_classifier(layer: DCDConv2d) -> None:
    """Start a 1x1 DCD classifier's projections as the DCD code's linear layers do: N(0, 0.01), P at
    zero with ``attention_init="zero"`` (Kaiming-normal P alone gives logits of std ~4)."""
    nn.init.normal_(layer.latent_in, 0.0, 0.01)
    if layer.attention_init == "authors":
        nn.init.normal_(layer.latent_out, 0.0, 0.01)


def dcd_macs(layer: DCDConv2d, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> dict[str, int]:
    """MACs per image (``fmdconv.profiling`` convention): ``conv`` the static convolution plus the
    latent path (Qᵀ, Φ, P) at the output positions, ``attention`` the pooling and the attention FCs,
    ``scaling`` Λ applied to the static output."""
    positions = math.prod(output_shape[-2:])
    latent = layer.latent_dim
    static = positions * kernel_elements(layer)
    fcs = sum(m.weight.numel() for m in layer.attention.modules() if isinstance(m, nn.Linear))
    return {
        "conv": static + positions * latent * (layer.in_channels + latent + layer.out_channels),
        "attention": math.prod(input_shape) + fcs,
        "scaling": math.prod(output_shape),
    }
