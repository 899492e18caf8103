"""Exact ways to compute a dynamic convolution, and the rule that picks one per call.

Every formulation computes, for each sample b,

    y_b = output_b * ( conv(input_b * x_b, sum_i kernel_b,i * (spatial_b * W_i)) + sum_i kernel_b,i * bias_i )

from the same attentions; a missing attention counts as 1. They differ only in cost:

``grouped``
    Build each sample's kernel and run one convolution with the batch folded into the groups.
    Cheap where feature maps are large; with a kernel that does not vary per sample (or batch 1)
    it is a single plain convolution.
``mixed``
    Convolve with all n static kernels at once, then mix the n outputs per sample (a batched
    product with the kernel attention; the output attention scales the result). Exact only
    without spatial attention (CondConv, DyConv, FMDConv); wins in deep layers where kernels are
    large and maps small (docs/design.md, section 5: 6x faster than ``grouped`` at 512 channels, 4x4).
``matmul``
    im2col (``F.unfold``) and a batched matrix product with the per-sample kernels; a plain
    reshape for 1x1 kernels. Does not tie any graph constant to the batch size, so it is the
    export path for layers with spatial attention.
``triton``
    Triton kernels in which each sample reads its own kernel, mixed in registers from the n static
    kernels (:mod:`fmdconv.layers.triton_conv`): no per-sample kernel in memory, forward or backward.
    CUDA only (or CPU tensors under ``TRITON_INTERPRET=1``); needs the optional ``triton`` package.

Channel attentions are folded into the per-sample kernel when that touches less memory than
scaling the feature map, and applied to the feature map otherwise.

``"auto"`` picks one per call. With :data:`benchmark` on (the default on CUDA, see
:func:`benchmark_enabled`) it times the exact candidates (:func:`candidate_formulations`) once per
call signature and caches the fastest for the process, as ``torch.backends.cudnn.benchmark`` does;
otherwise, and while exporting or compiling without a cached choice, the hand rule
:func:`choose_formulation` decides.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Formulation = Literal["grouped", "mixed", "matmul", "triton"]
Convolution = Callable[[Tensor, Tensor, "Tensor | None", dict[str, Tensor], "ConvGeometry"], Tensor]
FORMULATIONS: tuple[str, ...] = ("auto", "grouped", "mixed", "matmul", "triton")

# "mixed" runs n convolutions instead of one; it wins while the (n - 1) extra multiply-adds per kernel
# element and sample, (n - 1) * output pixels, stay below what building and using a per-sample kernel
# costs per element. Measured on a 2-core CPU, fwd and fwd+bwd alike (docs/speed.md): the crossing is
# between 4x4 and 8x8 output maps for n = 4 (at 7x7 the two tie).
MIXED_MAX_EXTRA_PIXELS = 150


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


def is_exporting() -> bool:
    """True while tracing for ONNX/TorchScript or exporting with torch.export."""
    exporting = getattr(torch.compiler, "is_exporting", None)
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or (exporting is not None and exporting())


def choose_formulation(
    attentions: dict[str, Tensor],
    kernel_num: int,
    geometry: ConvGeometry,
    input_shape: torch.Size,
    out_channels: int,
) -> Formulation:
    """The cheapest exact formulation for this call (see the module docstring and docs/speed.md).

    1. Without spatial attention and with one kernel per sample up to a scale (n = 1, or no kernel
       attention), ``mixed`` is a static convolution plus scalings: always the cheapest.
    2. At batch > 1 without spatial attention, ``mixed``: on CUDA always (on an H100 the fastest of
       ``mixed``, ``grouped`` and ``triton`` for the whole FMD ResNet-18 training step and at 5 of its 7
       stage shapes, docs/speed.md), on CPU while its n-fold compute stays small (small output maps).
    3. Otherwise a per-sample kernel: on CUDA at batch > 1 with Triton installed, ``triton`` (the
       kernel is mixed in registers, never stored); elsewhere ``matmul`` for 1x1 kernels and where the
       output map has fewer pixels than a group has output channels (im2col columns smaller than the
       kernel), ``grouped`` where maps are large (at batch 1, one ordinary convolution).
    """
    mixable = "spatial" not in attentions
    if is_exporting():
        return "mixed" if mixable else "matmul"
    batch = input_shape[0]
    out_h, out_w = geometry.output_size(input_shape[-2], input_shape[-1])
    mixes = "kernel" in attentions and kernel_num > 1
    if mixable and not mixes:
        return "mixed"
    attention = next(iter(attentions.values()))
    batched_on_gpu = batch > 1 and attention.is_cuda
    small_maps = (kernel_num - 1) * out_h * out_w <= MIXED_MAX_EXTRA_PIXELS
    if mixable and batch > 1 and (batched_on_gpu or small_maps):
        return "mixed"
    if batched_on_gpu and _triton_available(attention):
        return "triton"
    return per_sample_formulation(geometry, input_shape, out_channels)


def per_sample_formulation(
    geometry: ConvGeometry, input_shape: torch.Size, out_channels: int
) -> Literal["grouped", "matmul"]:
    """How to convolve with a kernel built per sample, without Triton: ``matmul`` while exporting,
    for 1x1 kernels and where the output map has fewer pixels than a group has output channels
    (im2col columns smaller than the kernel), ``grouped`` otherwise (at batch 1, one convolution)."""
    out_h, out_w = geometry.output_size(input_shape[-2], input_shape[-1])
    if is_exporting() or geometry.kernel_size == (1, 1) or out_h * out_w < out_channels // geometry.groups:
        return "matmul"
    return "grouped"


def scale_channels(x: Tensor, scale: Tensor | None) -> Tensor:
    """``x`` (B, C, H, W) times a per-sample channel attention (B, C); ``None`` counts as 1."""
    return x if scale is None else x * scale[:, :, None, None]


def _mixed_bias(bias: Tensor | None, kernel: Tensor | None) -> Tensor | None:
    """Per-sample bias sum_i kernel_i * bias_i: (B, C_out), or (C_out,) with no kernel attention."""
    if bias is None:
        return None
    return bias.sum(0) if kernel is None else kernel @ bias


def _finish(y: Tensor, bias: Tensor | None, output: Tensor | None) -> Tensor:
    """Add the (per-sample) bias, then apply the output attention."""
    if bias is not None:
        y = y + (bias[:, :, None, None] if bias.dim() == 2 else bias[:, None, None])
    return scale_channels(y, output)


def _per_sample_kernel(
    weight: Tensor,
    attentions: dict[str, Tensor],
    groups: int,
    fold_input: bool,
    fold_output: bool,
) -> Tensor:
    """sum_i kernel_b,i * (spatial_b * W_i), with the channel attentions optionally folded in.

    Returns (B, C_out, C_in/g, kh, kw), or (C_out, C_in/g, kh, kw) when nothing varies per sample.
    """
    kernel, spatial = attentions.get("kernel"), attentions.get("spatial")
    n, out_channels = weight.shape[:2]
    if kernel is None:
        mixed = weight.sum(0) if n > 1 else weight[0]
    elif _is_channels_last(weight):
        # Mix in memory order, (n, C_out, kh, kw, C_in/g), so the kernels are not copied first.
        source = weight.permute(0, 1, 3, 4, 2)
        mixed = (kernel @ source.flatten(1)).view(kernel.shape[0], *source.shape[1:]).permute(0, 1, 4, 2, 3)
    else:
        mixed = (kernel @ weight.flatten(1)).view(kernel.shape[0], *weight.shape[1:])
    if spatial is not None:
        mixed = mixed * spatial[:, None, None]
    if fold_input or fold_output:
        # One product with the (output channel x input channel) scale, B x C_out x C_in/g elements,
        # instead of one per attention over the whole per-sample kernel (k*k times larger).
        batch = attentions["output" if fold_output else "input"].shape[0]
        out_per_group, in_per_group = out_channels // groups, weight.shape[2]
        scale = attentions["output"].view(batch, groups, out_per_group, 1, 1) if fold_output else None
        if fold_input:
            input_scale = attentions["input"].view(batch, groups, 1, in_per_group, 1)
            scale = input_scale if scale is None else scale * input_scale
        shaped = mixed.view(-1, groups, out_per_group, in_per_group, mixed.shape[-2] * mixed.shape[-1])
        mixed = (shaped * scale).reshape(batch, *weight.shape[1:])
    return mixed


def _is_channels_last(weight: Tensor) -> bool:
    """Whether the (n, C_out, C_in/g, kh, kw) kernels are stored channels_last (C_in/g innermost)."""
    in_channels_last = weight.permute(0, 1, 3, 4, 2).is_contiguous()
    return weight.shape[2] > 1 and in_channels_last and not weight.is_contiguous()


def _fold_choices(
    attentions: dict[str, Tensor], weight: Tensor, x: Tensor, geometry: ConvGeometry, per_sample: bool
) -> tuple[bool, bool]:
    """Fold a channel attention into the kernel when the kernel is smaller than the map it would scale."""
    if not per_sample:
        return False, False
    kernel_elements = weight[0].numel()
    out_h, out_w = geometry.output_size(x.shape[-2], x.shape[-1])
    fold_input = "input" in attentions and kernel_elements < x.shape[1] * x.shape[-2] * x.shape[-1]
    fold_output = "output" in attentions and kernel_elements < weight.shape[1] * out_h * out_w
    return fold_input, fold_output


def _output_and_bias(
    attentions: dict[str, Tensor], bias: Tensor | None, fold_output: bool
) -> tuple[Tensor | None, Tensor | None]:
    """The bias to add and the output attention still to apply after the convolution."""
    output = attentions.get("output")
    mixed_bias = _mixed_bias(bias, attentions.get("kernel"))
    if fold_output:
        if mixed_bias is not None:
            mixed_bias = mixed_bias * output
        output = None
    return mixed_bias, output


def _computes_in_bf16_on_cpu(x: Tensor) -> bool:
    """Whether ``F.conv2d`` on ``x`` runs in bfloat16 on the CPU (bf16 input, or CPU autocast to bf16)."""
    if x.device.type != "cpu":
        return False
    if torch.is_autocast_enabled("cpu") and x.is_floating_point():
        return torch.get_autocast_dtype("cpu") == torch.bfloat16
    return x.dtype == torch.bfloat16


def _conv2d(x: Tensor, weight: Tensor, geometry: ConvGeometry, groups: int) -> Tensor:
    """``F.conv2d(x, weight)`` with the geometry's stride, padding and dilation and ``groups`` groups.

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
    return F.conv2d(x, weight, None, g.stride, padding, g.dilation, groups)


def conv_grouped(
    x: Tensor, weight: Tensor, bias: Tensor | None, attentions: dict[str, Tensor], geometry: ConvGeometry
) -> Tensor:
    """Per-sample kernels, the batch folded into the groups of one convolution."""
    per_sample = "kernel" in attentions or "spatial" in attentions or x.shape[0] == 1
    fold_input, fold_output = _fold_choices(attentions, weight, x, geometry, per_sample)
    kernel = _per_sample_kernel(weight, attentions, geometry.groups, fold_input, fold_output)
    if not fold_input:
        x = scale_channels(x, attentions.get("input"))
    y = grouped_per_sample(x, kernel, geometry)
    mixed_bias, output = _output_and_bias(attentions, bias, fold_output)
    return _finish(y, mixed_bias, output)


def grouped_per_sample(x: Tensor, kernel: Tensor, geometry: ConvGeometry) -> Tensor:
    """Convolve each sample with its own kernel (B, C_out, C_in/g, kh, kw), the batch folded into
    the groups of one convolution; a 4-D kernel is shared by the batch (one plain convolution)."""
    x = geometry.pad(x)
    g = geometry
    if kernel.dim() == 4:
        return _conv2d(x, kernel, g, g.groups)
    batch = x.shape[0]
    folded = x.reshape(1, -1, *x.shape[-2:])
    y = _conv2d(folded, kernel.reshape(-1, *kernel.shape[2:]), g, g.groups * batch)
    return y.view(batch, -1, *y.shape[-2:])


def conv_mixed(
    x: Tensor, weight: Tensor, bias: Tensor | None, attentions: dict[str, Tensor], geometry: ConvGeometry
) -> Tensor:
    """All n kernels as one static convolution, then a per-sample mix of the n outputs."""
    if "spatial" in attentions:
        raise ValueError("formulation='mixed' is exact only without spatial attention (not for ODConv)")
    n, out_channels = weight.shape[:2]
    g = geometry
    groups = g.groups
    x = g.pad(scale_channels(x, attentions.get("input")))
    kernel, output = attentions.get("kernel"), attentions.get("output")
    if n == 1 or kernel is None:
        y = _conv2d(x, weight.sum(0) if n > 1 else weight[0], g, groups)
        if kernel is not None:
            y = y * kernel.view(-1, 1, 1, 1)
        return _finish(y, _mixed_bias(bias, kernel), output)
    # Output channels ordered (group, kernel, channel-in-group) so each group sees only its inputs.
    stacked = weight.view(n, groups, out_channels // groups, *weight.shape[2:]).transpose(0, 1)
    y_all = _conv2d(x, stacked.reshape(-1, *weight.shape[2:]), g, groups)
    batch, _, out_h, out_w = y_all.shape
    coefficients = kernel[:, None, None, :].expand(batch, groups, 1, n).reshape(batch * groups, 1, n)
    y = torch.bmm(coefficients, y_all.reshape(batch * groups, n, -1)).view(batch, out_channels, out_h, out_w)
    return _finish(y, _mixed_bias(bias, kernel), output)


def conv_matmul(
    x: Tensor, weight: Tensor, bias: Tensor | None, attentions: dict[str, Tensor], geometry: ConvGeometry
) -> Tensor:
    """im2col and a batched matrix product with the per-sample kernels."""
    per_sample = "kernel" in attentions or "spatial" in attentions
    fold_input, fold_output = _fold_choices(attentions, weight, x, geometry, per_sample)
    kernel = _per_sample_kernel(weight, attentions, geometry.groups, fold_input, fold_output)
    if not fold_input:
        x = scale_channels(x, attentions.get("input"))
    y = matmul_per_sample(x, kernel, geometry)
    mixed_bias, output = _output_and_bias(attentions, bias, fold_output)
    return _finish(y, mixed_bias, output)


def matmul_per_sample(x: Tensor, kernel: Tensor, geometry: ConvGeometry) -> Tensor:
    """Convolve each sample with its own kernel (B, C_out, C_in/g, kh, kw), or a shared 4-D one,
    as im2col (``F.unfold``; a strided view for 1x1 kernels) and a batched matrix product."""
    g = geometry
    batch = x.shape[0]
    out_h, out_w = g.output_size(x.shape[-2], x.shape[-1])
    x = g.pad(x)
    if g.kernel_size == (1, 1) and g.padding == (0, 0):
        columns = x[:, :, :: g.stride[0], :: g.stride[1]].flatten(2)
    else:
        columns = F.unfold(x, g.kernel_size, g.dilation, g.padding, g.stride)
    columns = columns.view(batch, g.groups, -1, out_h * out_w)
    out_channels = kernel.shape[-4]
    kernel = kernel.reshape(-1, g.groups, out_channels // g.groups, columns.shape[2])
    return (kernel @ columns).view(batch, out_channels, out_h, out_w)


def _triton_available(x: Tensor) -> bool:
    """Whether the ``triton`` formulation runs on ``x`` (imports Triton only when asked)."""
    from fmdconv.layers.triton_conv import triton_available

    return triton_available(x)


def conv_triton(
    x: Tensor, weight: Tensor, bias: Tensor | None, attentions: dict[str, Tensor], geometry: ConvGeometry
) -> Tensor:
    """Per-sample kernels mixed in registers by Triton kernels (:mod:`fmdconv.layers.triton_conv`)."""
    from fmdconv.layers.triton_conv import conv_triton as convolve

    return convolve(x, weight, bias, attentions, geometry)


CONVOLUTIONS: dict[str, Convolution] = {
    "grouped": conv_grouped,
    "mixed": conv_mixed,
    "matmul": conv_matmul,
    "triton": conv_triton,
}


# --- The measured choice ("auto" with benchmarking on) -----------------------------------------------

# Formulations that run only on some inputs (a device, an optional package): name -> whether it runs
# compiled on this input, i.e. is worth timing or benchmarking there. A formulation in CONVOLUTIONS
# without an entry here runs everywhere. (Triton's CPU interpreter is for tests, not for speed.)
AVAILABILITY: dict[str, Callable[[Tensor], bool]] = {"triton": lambda x: x.is_cuda and _triton_available(x)}

# None: the per-device default of BENCHMARK_BY_DEFAULT; True / False: on / off on every device.
benchmark: bool | None = None
# docs/speed.md, "The measured choice": on CUDA the fastest formulation changes with the layer's shape
# (no single rule fits: H100, one layer each); on the 2-core CPU the rule already picks the fastest
# formulation almost everywhere, and timing the candidates costs several training steps.
BENCHMARK_BY_DEFAULT: dict[str, bool] = {"cuda": True}
BENCHMARK_REPEATS = 3

_chosen: dict[tuple[object, ...], str] = {}


def set_benchmark(enabled: bool | None) -> None:
    """Time the candidates for ``"auto"`` (True), use the hand rule (False), or the per-device default (None).

    Like ``torch.backends.cudnn.benchmark``; choices already measured stay cached (see
    :func:`clear_benchmark_cache`).
    """
    global benchmark
    if enabled is not None and not isinstance(enabled, bool):
        raise ValueError(f"enabled must be True, False or None, got {enabled!r}")
    benchmark = enabled


def benchmark_enabled(device: torch.device) -> bool:
    """Whether ``"auto"`` times the candidates on ``device`` (see :data:`benchmark`)."""
    return BENCHMARK_BY_DEFAULT.get(device.type, False) if benchmark is None else benchmark


def clear_benchmark_cache() -> None:
    """Forget every measured choice (the next call of each signature measures again)."""
    _chosen.clear()


def benchmark_choices() -> dict[tuple[object, ...], str]:
    """A copy of the measured choices: call signature -> formulation."""
    return dict(_chosen)


def candidate_formulations(attentions: dict[str, Tensor], x: Tensor) -> tuple[str, ...]:
    """The exact formulations for this call that can run on ``x``: every one in :data:`CONVOLUTIONS`
    whose :data:`AVAILABILITY` check passes, ``mixed`` only without spatial attention."""
    return tuple(
        name
        for name in CONVOLUTIONS
        if not (name == "mixed" and "spatial" in attentions) and formulation_available(name, x)
    )


def formulation_available(name: str, x: Tensor) -> bool:
    """Whether formulation ``name`` can run on input ``x`` (see :data:`AVAILABILITY`)."""
    available = AVAILABILITY.get(name)
    return available is None or available(x)


def _signature(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    attentions: dict[str, Tensor],
    geometry: ConvGeometry,
    training: bool,
) -> tuple[object, ...]:
    """What the cost of a call depends on: layer, input, dtypes, device, grad mode, autocast, training."""
    autocast = torch.is_autocast_enabled(x.device.type)
    return (
        geometry,
        tuple(weight.shape),
        weight.dtype,
        bias is not None,
        tuple(sorted(attentions)),
        tuple(x.shape),
        x.dtype,
        x.is_contiguous(),
        x.device,
        torch.is_grad_enabled(),
        training,
        torch.get_autocast_dtype(x.device.type) if autocast else None,
    )


def _capturing(x: Tensor) -> bool:
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


def select_formulation(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    attentions: dict[str, Tensor],
    geometry: ConvGeometry,
    training: bool,
) -> str:
    """The formulation for ``"auto"``: measured and cached where benchmarking is on, else the rule.

    Never times while exporting (the rule's batch-independent choice), compiling or capturing a
    CUDA graph (a cached choice if there is one, else the rule).
    """
    kernel_num, out_channels = weight.shape[:2]
    mixes = "kernel" in attentions and kernel_num > 1
    if is_exporting() or not benchmark_enabled(x.device) or ("spatial" not in attentions and not mixes):
        # The last case: one static convolution plus scalings, nothing can beat it.
        return choose_formulation(attentions, kernel_num, geometry, x.shape, out_channels)
    key = _signature(x, weight, bias, attentions, geometry, training)
    chosen = _chosen.get(key)
    if chosen is not None:
        return chosen  # the common case once measured: no rule to evaluate
    rule = choose_formulation(attentions, kernel_num, geometry, x.shape, out_channels)
    if torch.compiler.is_compiling() or _capturing(x):
        return rule
    times = measure_formulations(x, weight, bias, attentions, geometry, candidate_formulations(attentions, x))
    chosen = min(times, key=times.__getitem__) if times else rule
    _chosen[key] = chosen
    return chosen


def measure_formulations(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    attentions: dict[str, Tensor],
    geometry: ConvGeometry,
    names: tuple[str, ...],
    repeats: int = BENCHMARK_REPEATS,
) -> dict[str, float]:
    """Median seconds of each formulation in ``names`` for this call: forward, and backward too when
    grad is enabled and a tensor requires it (a gradient of ones, no random numbers drawn).

    The candidates run on detached copies with the same ``requires_grad`` flags, so no gradient
    reaches the caller's tensors and no autograd graph is kept; one untimed round warms each up
    (cuDNN's own autotuning, lazy initialisation), then ``repeats`` rounds interleave them. A
    candidate that fails (out of memory, a kernel that does not compile) is left out.
    """

    def leaf(t: Tensor) -> Tensor:
        return t.detach().requires_grad_(t.requires_grad and torch.is_grad_enabled())

    x_, weight_ = leaf(x), leaf(weight)
    bias_ = None if bias is None else leaf(bias)
    attentions_ = {name: leaf(a) for name, a in attentions.items()}
    needs_grad = [t for t in (x_, weight_, bias_, *attentions_.values()) if t is not None and t.requires_grad]

    def run(convolution: Convolution) -> float:
        _synchronize(x.device)
        start = time.perf_counter()
        y = convolution(x_, weight_, bias_, attentions_, geometry)
        if needs_grad:
            torch.autograd.grad(y, needs_grad, torch.ones_like(y))
        _synchronize(x.device)
        return time.perf_counter() - start

    runs: dict[str, Convolution] = {}
    for name in names:
        try:
            run(CONVOLUTIONS[name])
        except Exception:  # out of memory, a kernel that does not compile: not a candidate here
            continue
        runs[name] = CONVOLUTIONS[name]
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, convolution in runs.items():
            times[name].append(run(convolution))
    return {name: statistics.median(values) for name, values in times.items()}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
