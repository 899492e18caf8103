"""The ``triton`` formulation: per-sample convolution kernels written in Triton.

Each sample b is convolved with its own kernel, sum_i kernel_b,i * (spatial_b * W_i), without that
kernel ever being written to memory: every kernel below loads tiles of the n static kernels and mixes
them in registers with the sample's attentions before the tile product (implicit GEMM, fp32
accumulation). Three kernels:

``_forward_kernel``
    y_b = conv(input_b * x_b, mixed kernel) + bias_b. Tile M: output pixels of one sample, N: output
    channels of one group, K: taps x input channels of the group. Fused: the input channel attention
    (scales the x tile as it is loaded), the kernel mixing and spatial attention (on the weight tile),
    the per-sample bias (epilogue). Zero padding is a load mask.
``_input_grad_kernel``
    The gradient with respect to the scaled input: the transposed implicit GEMM (M: input pixels, N:
    input channels, K: taps x output channels), strides handled by divisibility masks, the same
    in-register kernel mixing.
``_weight_grad_kernel``
    For a tile of (output channel, input channel) at one tap, each sample's gradient tile
    G_b = dy_b . im2col(input_b * x_b) stays in registers; it is added to the n kernel gradients with
    weights kernel_b,i * spatial_b and reduced against the n static kernels into
    H[b, i, tap] = sum G_b * W_i, from which the kernel and spatial attention gradients follow
    (d kernel_b,i = sum_tap spatial_b * H, d spatial_b = sum_i kernel_b,i * H). No per-sample kernel
    gradient is materialised.

Left to plain torch ops: the output channel attention (one multiply after the op, as in the other
formulations), the mixing of the n biases (a (B, n) x (n, C_out) product), and the gradients of the
input attention (sum over pixels of the input gradient times x) and of the bias (sum of dy over
pixels). Non-zero padding modes are applied with ``F.pad`` before the op.

The op is registered with ``torch.library.custom_op`` (forward and backward), so ``torch.compile``
sees one opaque node per call and does not break the graph. Precision: fp32 inputs use TF32 in the
tile products exactly when ``torch.backends.cudnn.allow_tf32`` lets cuDNN convolutions use it; under
CUDA autocast the input is cast to the autocast dtype and the static kernels are cast tile by tile
after mixing in fp32. ``TRITON_INTERPRET=1`` runs the same kernels on CPU tensors (tests use it).
One module: the forward kernel and the two gradient kernels (input, weight) share the tile layout
and its launch code.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from fmdconv.layers.conv_primitives import ConvGeometry, mixed_bias, scale_channels

try:
    import triton
    import triton.language as tl
except ImportError:  # the package works without Triton; the formulation is then unavailable
    triton = None

# Programs the weight gradient aims for, splitting the batch between programs when the weight tiles
# alone are too few to fill the GPU (each split adds its partial sums atomically).
_WEIGHT_GRAD_TARGET_PROGRAMS = 512


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_version() -> str | None:
    """The installed Triton's version, or None without Triton (for benchmark records)."""
    return None if triton is None else triton.__version__


def triton_available(x: Tensor) -> bool:
    """Whether the kernels run on ``x``: a CUDA tensor, or a CPU tensor under ``TRITON_INTERPRET=1``."""
    if triton is None:
        return False
    return x.is_cuda or (x.device.type == "cpu" and _interpreting())


if triton is not None:
    # Specialising on these would compile one more variant per feature-map size and stride.
    _SHAPE_ARGUMENTS = ["H", "W", "OH", "OW", "stride_h", "stride_w", "pad_h", "pad_w", "dil_h", "dil_w"]

    def _configs(sizes: list[tuple[int, int, int, int, int]]) -> list[triton.Config]:
        """Autotuning candidates (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages); one small one if interpreted."""
        if _interpreting():
            sizes = [(16, 16, 16, 1, 1)]
        return [
            triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
            for m, n, k, w, s in sizes
        ]

    @triton.jit
    def _mixed_tile(
        w_ptr,
        offsets,
        mask,
        kernel_ptr,
        b,
        kernel_stride,
        tap_scale,
        N_KERNELS: tl.constexpr,
        HAS_KERNEL: tl.constexpr,
    ):
        """sum_i kernel[b, i] * W_i at ``offsets`` (offsets within one kernel) times ``tap_scale``, fp32."""
        tile = tl.load(w_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        if HAS_KERNEL:
            tile = tile * tl.load(kernel_ptr + b * N_KERNELS).to(tl.float32)
        for i in tl.static_range(1, N_KERNELS):
            part = tl.load(w_ptr + i * kernel_stride + offsets, mask=mask, other=0.0).to(tl.float32)
            if HAS_KERNEL:
                part = part * tl.load(kernel_ptr + b * N_KERNELS + i).to(tl.float32)
            tile += part
        return tile * tap_scale

    @triton.jit
    def _tap_scale(spatial_ptr, b, tap, taps, HAS_SPATIAL: tl.constexpr):
        """The spatial attention of sample ``b`` at ``tap`` (1 without spatial attention)."""
        scale = 1.0
        if HAS_SPATIAL:
            scale = tl.load(spatial_ptr + b * taps + tap).to(tl.float32)
        return scale

    @triton.autotune(
        configs=_configs([(128, 64, 32, 4, 3), (64, 64, 32, 4, 3), (64, 128, 32, 4, 3)]),
        key=["in_per_group", "out_per_group", "OH", "OW", "KH", "KW", "stride_h"],
    )
    @triton.jit(do_not_specialize=_SHAPE_ARGUMENTS)
    def _forward_kernel(
        x_ptr,
        w_ptr,
        kernel_ptr,
        spatial_ptr,
        scale_ptr,
        bias_ptr,
        y_ptr,
        H,
        W,
        OH,
        OW,
        in_per_group,
        out_per_group,
        groups,
        stride_h,
        stride_w,
        pad_h,
        pad_w,
        dil_h,
        dil_w,
        KH,
        KW,
        N_KERNELS: tl.constexpr,
        HAS_KERNEL: tl.constexpr,
        HAS_SPATIAL: tl.constexpr,
        HAS_SCALE: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        pixel_tiles = tl.cdiv(OH * OW, BLOCK_M)
        b = tl.program_id(0) // pixel_tiles
        g = tl.program_id(2)
        in_channels = in_per_group * groups
        out_channels = out_per_group * groups
        taps = KH * KW
        offs_m = (tl.program_id(0) % pixel_tiles) * BLOCK_M + tl.arange(0, BLOCK_M)
        m_valid = offs_m < OH * OW
        oh = offs_m // OW
        ow = offs_m % OW
        offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_valid = offs_n < out_per_group
        out_channel = g * out_per_group + offs_n
        x_base = x_ptr + b.to(tl.int64) * in_channels * H * W
        kernel_stride = out_channels * in_per_group * taps
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        channel_tiles = tl.cdiv(in_per_group, BLOCK_K)
        # One loop over (tap, input channel tile), so the compiler pipelines all of K.
        for step in range(taps * channel_tiles):
            tap = step // channel_tiles
            ih = oh * stride_h - pad_h + (tap // KW) * dil_h
            iw = ow * stride_w - pad_w + (tap % KW) * dil_w
            pixel_valid = m_valid & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            offs_k = (step % channel_tiles) * BLOCK_K + tl.arange(0, BLOCK_K)
            k_valid = offs_k < in_per_group
            in_channel = g * in_per_group + offs_k
            x_tile = tl.load(
                x_base + in_channel[None, :] * H * W + (ih * W + iw)[:, None],
                mask=pixel_valid[:, None] & k_valid[None, :],
                other=0.0,
            )
            if HAS_SCALE:
                scale = tl.load(scale_ptr + b * in_channels + in_channel, mask=k_valid, other=0.0)
                x_tile = (x_tile.to(tl.float32) * scale.to(tl.float32)[None, :]).to(x_ptr.dtype.element_ty)
            w_tile = _mixed_tile(
                w_ptr,
                (out_channel[None, :] * taps + tap) * in_per_group + offs_k[:, None],
                k_valid[:, None] & n_valid[None, :],
                kernel_ptr,
                b,
                kernel_stride,
                _tap_scale(spatial_ptr, b, tap, taps, HAS_SPATIAL),
                N_KERNELS,
                HAS_KERNEL,
            )
            acc = tl.dot(x_tile, w_tile.to(x_ptr.dtype.element_ty), acc, input_precision=PRECISION)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + b * out_channels + out_channel, mask=n_valid, other=0.0).to(tl.float32)[
                None, :
            ]
        y_base = y_ptr + b.to(tl.int64) * out_channels * OH * OW
        tl.store(
            y_base + out_channel[None, :] * OH * OW + offs_m[:, None],
            acc.to(y_ptr.dtype.element_ty),
            mask=m_valid[:, None] & n_valid[None, :],
        )

    @triton.autotune(
        configs=_configs([(128, 64, 32, 4, 3), (64, 64, 32, 4, 3), (64, 128, 32, 4, 3)]),
        key=["in_per_group", "out_per_group", "H", "W", "KH", "KW", "stride_h"],
    )
    @triton.jit(do_not_specialize=_SHAPE_ARGUMENTS)
    def _input_grad_kernel(
        dy_ptr,
        w_ptr,
        kernel_ptr,
        spatial_ptr,
        dx_ptr,
        H,
        W,
        OH,
        OW,
        in_per_group,
        out_per_group,
        groups,
        stride_h,
        stride_w,
        pad_h,
        pad_w,
        dil_h,
        dil_w,
        KH,
        KW,
        N_KERNELS: tl.constexpr,
        HAS_KERNEL: tl.constexpr,
        HAS_SPATIAL: tl.constexpr,
        PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        pixel_tiles = tl.cdiv(H * W, BLOCK_M)
        b = tl.program_id(0) // pixel_tiles
        g = tl.program_id(2)
        in_channels = in_per_group * groups
        out_channels = out_per_group * groups
        taps = KH * KW
        offs_m = (tl.program_id(0) % pixel_tiles) * BLOCK_M + tl.arange(0, BLOCK_M)
        m_valid = offs_m < H * W
        ih = offs_m // W
        iw = offs_m % W
        offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_valid = offs_n < in_per_group
        dy_base = dy_ptr + b.to(tl.int64) * out_channels * OH * OW
        kernel_stride = out_channels * in_per_group * taps
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        channel_tiles = tl.cdiv(out_per_group, BLOCK_K)
        for step in range(taps * channel_tiles):
            tap = step // channel_tiles
            # Output pixel (oh, ow) reads input (oh * stride - pad + r * dil, ...): invert where it divides.
            th = ih + pad_h - (tap // KW) * dil_h
            tw = iw + pad_w - (tap % KW) * dil_w
            oh = th // stride_h
            ow = tw // stride_w
            pixel_valid = (
                m_valid
                & (th >= 0)
                & (tw >= 0)
                & (th % stride_h == 0)
                & (tw % stride_w == 0)
                & (oh < OH)
                & (ow < OW)
            )
            offs_k = (step % channel_tiles) * BLOCK_K + tl.arange(0, BLOCK_K)
            k_valid = offs_k < out_per_group
            out_channel = g * out_per_group + offs_k
            dy_tile = tl.load(
                dy_base + out_channel[None, :] * OH * OW + (oh * OW + ow)[:, None],
                mask=pixel_valid[:, None] & k_valid[None, :],
                other=0.0,
            )
            w_tile = _mixed_tile(
                w_ptr,
                (out_channel[:, None] * taps + tap) * in_per_group + offs_n[None, :],
                k_valid[:, None] & n_valid[None, :],
                kernel_ptr,
                b,
                kernel_stride,
                _tap_scale(spatial_ptr, b, tap, taps, HAS_SPATIAL),
                N_KERNELS,
                HAS_KERNEL,
            )
            acc = tl.dot(dy_tile, w_tile.to(dy_ptr.dtype.element_ty), acc, input_precision=PRECISION)
        dx_base = dx_ptr + b.to(tl.int64) * in_channels * H * W
        tl.store(
            dx_base + (g * in_per_group + offs_n)[None, :] * H * W + offs_m[:, None],
            acc.to(dx_ptr.dtype.element_ty),
            mask=m_valid[:, None] & n_valid[None, :],
        )

    @triton.autotune(
        configs=_configs([(32, 32, 64, 4, 3), (64, 32, 64, 4, 3), (32, 64, 32, 4, 3)]),
        key=["in_per_group", "out_per_group", "OH", "OW", "KH", "KW", "batch"],
        reset_to_zero=["dw_ptr", "h_ptr"],
    )
    @triton.jit(do_not_specialize=["batch", *_SHAPE_ARGUMENTS])
    def _weight_grad_kernel(
        x_ptr,
        dy_ptr,
        w_ptr,
        kernel_ptr,
        spatial_ptr,
        scale_ptr,
        dw_ptr,
        h_ptr,
        batch,
        H,
        W,
        OH,
        OW,
        in_per_group,
        out_per_group,
        groups,
        stride_h,
        stride_w,
        pad_h,
        pad_w,
        dil_h,
        dil_w,
        KH,
        KW,
        N_KERNELS: tl.constexpr,
        KERNELS_POW2: tl.constexpr,
        HAS_KERNEL: tl.constexpr,
        HAS_SPATIAL: tl.constexpr,
        HAS_SCALE: tl.constexpr,
        PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        # M: output channels of the group; N: input channels of the group at one tap; K: pixels.
        in_tiles = tl.cdiv(in_per_group, BLOCK_N)
        tap = tl.program_id(1) // in_tiles
        splits = tl.num_programs(2) // groups
        g = tl.program_id(2) // splits
        split = tl.program_id(2) % splits
        in_channels = in_per_group * groups
        out_channels = out_per_group * groups
        taps = KH * KW
        offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        m_valid = offs_m < out_per_group
        offs_n = (tl.program_id(1) % in_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_valid = offs_n < in_per_group
        out_channel = g * out_per_group + offs_m
        in_channel = g * in_per_group + offs_n
        kernel_index = tl.arange(0, KERNELS_POW2)
        kernel_valid = kernel_index < N_KERNELS
        kernel_stride = out_channels * in_per_group * taps
        w_offsets = (
            kernel_index[:, None, None] * kernel_stride
            + ((out_channel[:, None] * taps + tap) * in_per_group + offs_n[None, :])[None, :, :]
        )
        w_mask = kernel_valid[:, None, None] & (m_valid[:, None] & n_valid[None, :])[None, :, :]
        statics = tl.load(w_ptr + w_offsets, mask=w_mask, other=0.0).to(tl.float32)
        dw = tl.zeros((KERNELS_POW2, BLOCK_M, BLOCK_N), dtype=tl.float32)
        dr = tap // KW * dil_h - pad_h
        dc = tap % KW * dil_w - pad_w
        first_sample = (split * batch // splits).to(tl.int64)
        for sample in range((split + 1) * batch // splits - first_sample):
            b = first_sample + sample
            x_base = x_ptr + b * in_channels * H * W
            dy_base = dy_ptr + b * out_channels * OH * OW
            per_sample = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for k0 in range(0, OH * OW, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                k_valid = offs_k < OH * OW
                ih = (offs_k // OW) * stride_h + dr
                iw = (offs_k % OW) * stride_w + dc
                pixel_valid = k_valid & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                dy_tile = tl.load(
                    dy_base + out_channel[:, None] * OH * OW + offs_k[None, :],
                    mask=m_valid[:, None] & k_valid[None, :],
                    other=0.0,
                )
                x_tile = tl.load(
                    x_base + in_channel[None, :] * H * W + (ih * W + iw)[:, None],
                    mask=pixel_valid[:, None] & n_valid[None, :],
                    other=0.0,
                )
                if HAS_SCALE:
                    scale = tl.load(scale_ptr + b * in_channels + in_channel, mask=n_valid, other=0.0)
                    x_tile = (x_tile.to(tl.float32) * scale.to(tl.float32)[None, :]).to(
                        x_ptr.dtype.element_ty
                    )
                per_sample = tl.dot(
                    dy_tile, x_tile.to(dy_ptr.dtype.element_ty), per_sample, input_precision=PRECISION
                )
            if HAS_KERNEL:
                coefficients = tl.load(
                    kernel_ptr + b * N_KERNELS + kernel_index, mask=kernel_valid, other=0.0
                )
                coefficients = coefficients.to(tl.float32)
            else:
                coefficients = tl.where(kernel_valid, 1.0, 0.0)
            coefficients = coefficients * _tap_scale(spatial_ptr, b, tap, taps, HAS_SPATIAL)
            dw += coefficients[:, None, None] * per_sample[None, :, :]
            h = tl.sum(tl.sum(per_sample[None, :, :] * statics, axis=2), axis=1)
            tl.atomic_add(h_ptr + (b * N_KERNELS + kernel_index) * taps + tap, h, mask=kernel_valid)
        tl.atomic_add(dw_ptr + w_offsets, dw, mask=w_mask)


def _launch_geometry(
    x: Tensor, weight: Tensor, stride: list[int], padding: list[int], dilation: list[int], groups: int
) -> dict[str, int]:
    """The integer arguments shared by the three kernels."""
    kh, kw, in_per_group = weight.shape[2:]
    height, width = x.shape[-2:]
    return {
        "H": height,
        "W": width,
        "OH": (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1,
        "OW": (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1,
        "in_per_group": in_per_group,
        "out_per_group": weight.shape[1] // groups,
        "groups": groups,
        "stride_h": stride[0],
        "stride_w": stride[1],
        "pad_h": padding[0],
        "pad_w": padding[1],
        "dil_h": dilation[0],
        "dil_w": dilation[1],
        "KH": kh,
        "KW": kw,
    }


@torch.library.custom_op("fmdconv::triton_conv", mutates_args=())
def _triton_conv(
    x: Tensor,
    weight: Tensor,
    kernel: Tensor | None,
    spatial: Tensor | None,
    scale: Tensor | None,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    precision: str,
) -> Tensor:
    """y_b = conv(scale_b * x_b, sum_i kernel_b,i * spatial_b * W_i) + bias_b (see the module docstring).

    ``x`` (B, C_in, H, W) contiguous; ``weight`` (n, C_out, kh, kw, C_in/g) contiguous (input channels
    innermost, so weight tiles load contiguously; channels_last kernels need no copy); ``kernel`` (B, n),
    ``spatial`` (B, kh*kw), ``scale`` (B, C_in), ``bias`` (B, C_out), each optional (missing: 1, or no bias).
    """
    geometry = _launch_geometry(x, weight, stride, padding, dilation, groups)
    batch, out_channels = x.shape[0], weight.shape[1]
    y = x.new_empty(batch, out_channels, geometry["OH"], geometry["OW"])
    if y.numel() == 0:
        return y
    dummy = weight  # never read: stands in for a missing optional tensor

    def grid(meta: dict[str, int]) -> tuple[int, int, int]:
        pixel_tiles = triton.cdiv(geometry["OH"] * geometry["OW"], meta["BLOCK_M"])
        return batch * pixel_tiles, triton.cdiv(geometry["out_per_group"], meta["BLOCK_N"]), groups

    _forward_kernel[grid](
        x,
        weight,
        dummy if kernel is None else kernel,
        dummy if spatial is None else spatial,
        dummy if scale is None else scale,
        dummy if bias is None else bias,
        y,
        **geometry,
        N_KERNELS=weight.shape[0],
        HAS_KERNEL=kernel is not None,
        HAS_SPATIAL=spatial is not None,
        HAS_SCALE=scale is not None,
        HAS_BIAS=bias is not None,
        PRECISION=precision,
    )
    return y


@_triton_conv.register_fake
def _(x, weight, kernel, spatial, scale, bias, stride, padding, dilation, groups, precision):
    geometry = _launch_geometry(x, weight, stride, padding, dilation, groups)
    return x.new_empty(x.shape[0], weight.shape[1], geometry["OH"], geometry["OW"])


@torch.library.custom_op("fmdconv::triton_conv_backward", mutates_args=())
def _triton_conv_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    kernel: Tensor | None,
    spatial: Tensor | None,
    scale: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    precision: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of the scaled input (like ``x``), of the n kernels (fp32, laid out like ``weight``) and
    H (B, n, taps), fp32."""
    geometry = _launch_geometry(x, weight, stride, padding, dilation, groups)
    batch = x.shape[0]
    n, taps = weight.shape[0], geometry["KH"] * geometry["KW"]
    grad_input = torch.empty_like(x)
    grad_weight = torch.zeros_like(weight, dtype=torch.float32)
    h = torch.zeros(batch, n, taps, dtype=torch.float32, device=x.device)
    if grad.numel() == 0:
        return grad_input.zero_(), grad_weight, h
    dummy = weight
    flags = {
        "N_KERNELS": n,
        "HAS_KERNEL": kernel is not None,
        "HAS_SPATIAL": spatial is not None,
        "PRECISION": precision,
    }
    kernel, spatial = dummy if kernel is None else kernel, dummy if spatial is None else spatial

    def input_grid(meta: dict[str, int]) -> tuple[int, int, int]:
        pixel_tiles = triton.cdiv(geometry["H"] * geometry["W"], meta["BLOCK_M"])
        return batch * pixel_tiles, triton.cdiv(geometry["in_per_group"], meta["BLOCK_N"]), groups

    _input_grad_kernel[input_grid](grad, weight, kernel, spatial, grad_input, **geometry, **flags)

    def weight_grid(meta: dict[str, int]) -> tuple[int, int, int]:
        tiles = (
            triton.cdiv(geometry["out_per_group"], meta["BLOCK_M"]),
            taps * triton.cdiv(geometry["in_per_group"], meta["BLOCK_N"]),
        )
        splits = max(1, min(batch, _WEIGHT_GRAD_TARGET_PROGRAMS // (tiles[0] * tiles[1] * groups)))
        return tiles[0], tiles[1], groups * splits

    _weight_grad_kernel[weight_grid](
        x,
        grad,
        weight,
        kernel,
        spatial,
        dummy if scale is None else scale,
        grad_weight,
        h,
        batch,
        **geometry,
        KERNELS_POW2=triton.next_power_of_2(n),
        HAS_SCALE=scale is not None,
        **flags,
    )
    return grad_input, grad_weight, h


@_triton_conv_backward.register_fake
def _(grad, x, weight, kernel, spatial, scale, stride, padding, dilation, groups, precision):
    n, taps = weight.shape[0], weight.shape[2] * weight.shape[3]
    return (
        torch.empty_like(x),
        weight.new_empty(weight.shape, dtype=torch.float32),
        x.new_empty(x.shape[0], n, taps, dtype=torch.float32),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, weight, kernel, spatial, scale, bias, stride, padding, dilation, groups, precision = inputs
    ctx.save_for_backward(x, weight, kernel, spatial, scale)
    ctx.arguments = (stride, padding, dilation, groups, precision)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
    x, weight, kernel, spatial, scale = ctx.saved_tensors
    grad = grad.contiguous()
    grad_scaled, grad_weight, h = torch.ops.fmdconv.triton_conv_backward(
        grad, x, weight, kernel, spatial, scale, *ctx.arguments
    )
    grad_kernel = grad_spatial = grad_scale = grad_bias = None
    if kernel is not None:
        grad_kernel = (h if spatial is None else h * spatial[:, None, :].float()).sum(2).to(kernel.dtype)
    if spatial is not None:
        grad_spatial = (h if kernel is None else h * kernel[:, :, None].float()).sum(1).to(spatial.dtype)
    grad_x = grad_scaled
    if scale is not None:
        grad_x = grad_scaled * scale[:, :, None, None].to(grad_scaled.dtype)
        grad_scale = (grad_scaled.float() * x.float()).sum((2, 3)).to(scale.dtype)
    if ctx.bias_dtype is not None:
        grad_bias = grad.float().sum((2, 3)).to(ctx.bias_dtype)
    return grad_x, grad_weight.to(weight.dtype), grad_kernel, grad_spatial, grad_scale, grad_bias, *[None] * 5


_triton_conv.register_autograd(_backward, setup_context=_setup_context)


def _precision(x: Tensor) -> str:
    """TF32 in the tile products exactly where torch lets cuDNN convolutions use it."""
    if x.dtype == torch.float32 and x.is_cuda and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


def conv_triton(
    x: Tensor, weight: Tensor, bias: Tensor | None, attentions: dict[str, Tensor], geometry: ConvGeometry
) -> Tensor:
    """The ``triton`` formulation (same signature and result as the others in ``formulations``)."""
    if not triton_available(x):
        installed = "installed" if triton is not None else "not installed"
        raise ValueError(
            "formulation='triton' needs Triton and a CUDA tensor (or TRITON_INTERPRET=1 for CPU tensors); "
            f"got a {x.device.type} tensor with Triton {installed}"
        )
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        x = x.to(torch.get_autocast_dtype("cuda"))
    x = geometry.pad(x).contiguous()
    kernel, spatial = attentions.get("kernel"), attentions.get("spatial")
    sample_bias = mixed_bias(bias, kernel)
    if sample_bias is not None and sample_bias.dim() == 1:
        sample_bias = sample_bias.expand(x.shape[0], -1)
    y = _triton_conv(
        x,
        weight.permute(0, 1, 3, 4, 2).contiguous(),
        None if kernel is None else kernel.contiguous(),
        None if spatial is None else spatial.flatten(1).contiguous(),
        None if "input" not in attentions else attentions["input"].contiguous(),
        None if sample_bias is None else sample_bias.contiguous(),
        list(geometry.stride),
        list(geometry.padding),
        list(geometry.dilation),
        geometry.groups,
        _precision(x),
    )
    return scale_channels(y, attentions.get("output"))
