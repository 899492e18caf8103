"""What every formulation of a dynamic convolution shares, below all of them.

:class:`ConvGeometry` (the static convolution arguments), the channel scaling and bias mixing of
the formula in :mod:`fmdconv.layers.formulations`, and :func:`conv2d` (``F.conv2d`` with the
geometry). :mod:`fmdconv.layers.formulations` and :mod:`fmdconv.layers.triton_conv` both import
from here and from nothing above it, so neither imports the other at module level.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class ConvGeometry:
    """Static convolution arguments; ``pre_pad`` is set when padding must be applied with ``F.pad``."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    pre_pad: tuple[int, int, int, int] | None
    pad_mode: str

    @classmethod
    def of_conv(
        cls,
        kernel_size: tuple[int, int],
        stride: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
        padding_mode: str,
        explicit_padding: tuple[int, int, int, int],
    ) -> ConvGeometry:
        """The geometry of a convolution with nn.Conv2d's arguments and padding (left, right, top,
        bottom): the convolution pads itself when the padding is symmetric zeros, ``F.pad`` otherwise."""
        left, right, top, bottom = explicit_padding
        if left == right and top == bottom and padding_mode == "zeros":
            return cls(kernel_size, stride, (top, left), dilation, groups, None, "constant")
        mode = "constant" if padding_mode == "zeros" else padding_mode
        return cls(kernel_size, stride, (0, 0), dilation, groups, explicit_padding, mode)

    def pad(self, x: Tensor) -> Tensor:
        return x if self.pre_pad is None else F.pad(x, self.pre_pad, mode=self.pad_mode)

    def minimum_input_size(self) -> tuple[int, int]:
        """The smallest unpadded input (height, width) whose padded map holds one dilated kernel."""
        left, right, top, bottom = self.pre_pad or (0, 0, 0, 0)
        return (
            max(1, self.dilation[0] * (self.kernel_size[0] - 1) + 1 - top - bottom - 2 * self.padding[0]),
            max(1, self.dilation[1] * (self.kernel_size[1] - 1) + 1 - left - right - 2 * self.padding[1]),
        )

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size of the output for an unpadded input of size (height, width)."""
        left, right, top, bottom = self.pre_pad or (0, 0, 0, 0)
        return (
            (height + top + bottom + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1)
            // self.stride[0]
            + 1,
            (width + left + right + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1)
            // self.stride[1]
            + 1,
        )


def scale_channels(x: Tensor, scale: Tensor | None) -> Tensor:
    """``x`` (B, C, H, W) times a per-sample channel attention (B, C); ``None`` counts as 1."""
    return x if scale is None else x * scale.view(*scale.shape, 1, 1)


def mixed_bias(bias: Tensor | None, kernel: Tensor | None) -> Tensor | None:
    """Per-sample bias sum_i kernel_i * bias_i: (B, C_out), or (C_out,) with no kernel attention."""
    if bias is None:
        return None
    return bias.sum(0) if kernel is None else kernel @ bias


def add_bias(y: Tensor, bias: Tensor | None) -> Tensor:
    """``y`` (B, C, H, W) plus a bias (C,) or a per-sample one (B, C)."""
    if bias is None:
        return y
    return y + (bias.view(*bias.shape, 1, 1) if bias.dim() == 2 else bias.view(-1, 1, 1))


def _computes_in_bf16_on_cpu(x: Tensor) -> bool:
    """Whether ``F.conv2d`` on ``x`` runs in bfloat16 on the CPU (bf16 input, or CPU autocast to bf16)."""
    if x.device.type != "cpu":
        return False
    if torch.is_autocast_enabled("cpu") and x.is_floating_point():
        return torch.get_autocast_dtype("cpu") == torch.bfloat16
    return x.dtype == torch.bfloat16


def conv2d(
    x: Tensor, weight: Tensor, geometry: ConvGeometry, groups: int, bias: Tensor | None = None
) -> Tensor:
    """``F.conv2d(x, weight, bias)`` with the geometry's stride, padding and dilation and ``groups`` groups.

    Works around a oneDNN bug (v3.12.0, in torch 2.13.0+cpu): in bf16, when the output is one pixel
    wide, its backward-weights kernels (``brgconv_bwd_w`` on AMX, ``jit_bf16`` on AVX-512) read the
    weight gradient of the taps on the left/right zero padding from uninitialised memory: wrong,
    often NaN, varying from call to call (forward and input gradient are right; docs/training.md).
    Padding such an input with ``F.pad`` first is the same convolution with no padding for the
    kernel to mishandle; the copy is of a map one output pixel wide.
    """
    g = geometry
    padding = g.padding
    if padding != (0, 0) and _computes_in_bf16_on_cpu(x) and g.output_size(*x.shape[-2:])[1] == 1:
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
        padding = (0, 0)
    return F.conv2d(x, weight, bias, g.stride, padding, g.dilation, groups)


def is_exporting() -> bool:
    """True while tracing for ONNX/TorchScript or exporting with torch.export."""
    exporting = getattr(torch.compiler, "is_exporting", None)
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or (exporting is not None and exporting())
