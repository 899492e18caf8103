"""FDConv as a method: which convolutions it replaces, how a static one becomes an FDConv2d, and
what its layer costs; the hooks of its record (:mod:`fmdconv.layers.registry`). The layer itself is
:mod:`fmdconv.layers.fdconv`."""

from __future__ import annotations

import math

import torch
from torch import nn

from fmdconv.layers.fdconv import FDConv2d
from fmdconv.layers.helpers import kernel_elements

# FDConv in the backbones and in convert(): the authors' layer falls back to a static convolution
# unless min(C_in, C_out) > 16, the kernel is a square 1x1 or 3x3 and there are no groups.
FD_MIN_CHANNELS = 16
FD_KERNEL_SIZES = (1, 3)


def fd_replaces(
    in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], groups: int = 1
) -> bool:
    """Whether FDConv makes this convolution dynamic: ``min(C_in, C_out) > 16``, a square 1x1 or 3x3
    kernel, no groups. The authors' layer ignores the stride (their ``use_fdconv_if_stride_in`` is
    stored, never read), so strided convolutions are replaced too."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    return (
        min(in_channels, out_channels) > FD_MIN_CHANNELS
        and kh == kw
        and kh in FD_KERNEL_SIZES
        and groups == 1
    )


def fd_from_static(
    conv: nn.Conv2d, kernel_num: int, preserve_output: bool, options: dict[str, object]
) -> FDConv2d:
    """An FDConv2d whose spectrum is the static weight's, as the FDConv authors' conversion tool
    stores it; with ``preserve_output`` its heads start at zero (every gate 1, the kernel attention
    1/K, every band scale 1), so it computes the static convolution."""
    if preserve_output and options.get("attention_init", "zero") != "zero":
        raise ValueError(
            "preserve_output=True needs attention_init='zero' for conv='fd' (the heads start at 0)"
        )
    layer = FDConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
        kernel_num=kernel_num,
        **({"attention_init": "authors"} if not preserve_output and "attention_init" not in options else {}),
        **options,  # type: ignore[arg-type]
    )
    layer.load_static_weight(conv.weight)
    if conv.bias is not None:
        with torch.no_grad():
            layer.bias.copy_(conv.bias)
    layer.train(conv.training)
    return layer


def fft_macs(points: int) -> int:
    """MACs charged for one real FFT (or inverse) of ``points`` real points: ``2 N log2 N``."""
    return round(2 * points * math.log2(points)) if points > 1 else 0


def fd_macs(layer: FDConv2d, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> dict[str, int]:
    """MACs per image as the parts compute (the ``fmdconv.profiling`` convention, ``direct``
    formulation): ``conv`` the static convolution; ``attention`` the pooling, the global path's FCs,
    the local path's 1-D convolution and FBM's gate convolutions; ``aggregation`` the spectrum scaled
    by the group attentions, one ``irfft2`` and the gate products over the kernel; ``scaling`` FBM's
    transforms and masks over the input map."""
    kernel = kernel_elements(layer)
    static = math.prod(output_shape[-2:]) * kernel
    rows, columns = layer.dft_weight.shape[0], layer.in_channels * layer.kernel_size[1]
    attention = math.prod(input_shape)
    gates = 0
    if layer.global_modulation is not None:
        attention += sum(
            m.weight.numel() for m in layer.global_modulation.modules() if isinstance(m, nn.Linear)
        )
        gates += len(set(layer.global_modulation.heads) - {"kernel"})
    if layer.local_modulation is not None:
        attention += layer.local_modulation.conv.weight.numel() * layer.in_channels
        gates += 1
    aggregation = 2 * rows * (columns // 2 + 1) + fft_macs(rows * columns) + gates * kernel
    scaling = 0
    if layer.band_modulation is not None:
        bands = len(layer.band_modulation.k_list)
        channels, height, width = input_shape
        map_fft = fft_macs(height * width)
        attention += bands * layer.band_modulation.gates[0].weight.numel() * height * width
        per_band = 2 * height * (width // 2 + 1) + map_fft + height * width
        scaling = channels * (map_fft + bands * per_band)
    return {"conv": static, "attention": attention, "aggregation": aggregation, "scaling": scaling}
