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
scaling the feature map, and applied to the feature map otherwise. In inference (no autograd) the
per-sample kernel is mixed in one pass over the n static kernels and then scaled in place, so no
temporary is larger than the mixed kernels: at batch 1, one kernel's worth.

``"auto"`` picks one per call. With measuring on (the default on every device, like
``torch.backends.cudnn.benchmark``; see :mod:`fmdconv.layers.choice_cache` for the switches and the
cache file) the first call of a signature times the exact candidates (:func:`candidate_formulations`)
and keeps the fastest for this process and the next ones on the same machine; each layer also keeps
its choice per input, so a repeated call is one dictionary lookup. Otherwise, and while exporting or
compiling without a choice the layer already made, the hand rule :func:`choose_formulation` decides.

The formulations, the rule and the measured choice among them stay together: each is exact for the
same set of attentions, and the choice is only correct while it sees every candidate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fmdconv.layers.choice_cache import (
    CHOICES,
    benchmark_choices,
    benchmark_enabled,
    clear_benchmark_cache,
    measurement_report,
    set_benchmark,
    signature,
)
from fmdconv.layers.conv_primitives import (
    ConvGeometry,
    add_bias,
    conv2d,
    is_exporting,
    mixed_bias,
    scale_channels,
)
from fmdconv.utils.timing import time_interleaved

# Re-exported: other layer modules import these from here, and the switches of the measured choice.
__all__ = [
    "ConvGeometry",
    "benchmark_choices",
    "benchmark_enabled",
    "clear_benchmark_cache",
    "is_exporting",
    "measurement_report",
    "mixed_bias",
    "scale_channels",
    "set_benchmark",
]

Formulation = Literal["grouped", "mixed", "matmul", "triton"]
Convolution = Callable[[Tensor, Tensor, "Tensor | None", dict[str, Tensor], "ConvGeometry"], Tensor]
FORMULATIONS: tuple[str, ...] = ("auto", "grouped", "mixed", "matmul", "triton")

# "mixed" runs n convolutions instead of one; it wins while the (n - 1) extra multiply-adds per kernel
# element and sample, (n - 1) * output pixels, stay below what building and using a per-sample kernel
# costs per element. Measured on a 2-core CPU, fwd and fwd+bwd alike (docs/speed.md): the crossing is
# between 4x4 and 8x8 output maps for n = 4 (at 7x7 the two tie).
MIXED_MAX_EXTRA_PIXELS = 150


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


def _per_sample_kernel(
    weight: Tensor,
    attentions: dict[str, Tensor],
    groups: int,
    fold_input: bool,
    fold_output: bool,
) -> Tensor:
    """sum_i kernel_b,i * (spatial_b * W_i), with the channel attentions optionally folded in.

    Returns (C_out, C_in/g, kh, kw) when nothing varies per sample, else the per-sample kernels as
    (B, C_out, C_in/g, kh, kw) or, when only the kernel attention mixes them, flat as
    (B, C_out * C_in/g * kh * kw): the callers reshape it once to what they need.

    The mix reads each static kernel once (a (B, n) x (n, K) product). Where autograd needs nothing
    (inference), the spatial and channel attentions then scale that product in place, so no
    temporary is larger than the mixed kernels (:func:`_without_autograd`).
    """
    kernel, spatial = attentions.get("kernel"), attentions.get("spatial")
    n, out_channels = weight.shape[:2]
    # In place only on a per-sample product of our own: never on the weights (kernel None, n = 1).
    in_place = kernel is not None and _without_autograd(weight, attentions)
    if kernel is None:
        mixed = weight.sum(0) if n > 1 else weight[0]
    elif _is_channels_last(weight):
        # Mix in memory order, (n, C_out, kh, kw, C_in/g), so the kernels are not copied first.
        source = weight.permute(0, 1, 3, 4, 2)
        mixed = _mix(kernel, source.flatten(1), in_place)
        mixed = mixed.view(kernel.shape[0], *source.shape[1:]).permute(0, 1, 4, 2, 3)
    else:
        mixed = _mix(kernel, weight.flatten(1), in_place)
        if spatial is None and not (fold_input or fold_output):
            return mixed
        mixed = mixed.view(kernel.shape[0], *weight.shape[1:])
    if spatial is not None:
        spatial = spatial.view(-1, 1, 1, *spatial.shape[1:])
        if in_place:
            mixed.mul_(spatial)
        else:
            mixed = mixed * spatial
            in_place = _without_autograd(weight, attentions)
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
        if in_place:
            shaped.mul_(scale)
        else:
            mixed = (shaped * scale).reshape(batch, *weight.shape[1:])
    return mixed


def _mix(kernel: Tensor, flat: Tensor, without_autograd: bool) -> Tensor:
    """The (B, n) x (n, K) mix of the flattened kernels ``flat``.

    On a multi-threaded CPU at batch 1, ``without_autograd`` (:func:`_without_autograd`), it is n
    passes instead, the first kernel times its weight and an in-place multiply-add of each other one
    (with the attention's 0-dim entries, so nothing waits for the host): the single-row product runs
    on one thread and the passes on all (docs/speed.md, "Inference: each kernel read once"). While
    torch.compile traces, the product, which the compiler fuses itself.
    """
    if (
        kernel.shape[0] != 1
        or flat.device.type != "cpu"
        or torch.compiler.is_compiling()
        or torch.get_num_threads() == 1
        or not without_autograd
    ):
        return kernel @ flat
    row = kernel[0]
    mixed = flat[0] * row[0]
    for i in range(1, flat.shape[0]):
        mixed.addcmul_(flat[i], row[i])
    return mixed.unsqueeze(0)


def _without_autograd(weight: Tensor, attentions: dict[str, Tensor]) -> bool:
    """Whether no gradient will flow through this call's kernel (inference) and no graph is being
    exported, so a per-sample kernel may be scaled in place."""
    if torch.is_grad_enabled() and (
        weight.requires_grad or any(a.requires_grad for a in attentions.values())
    ):
        return False
    return not is_exporting()


def _is_channels_last(weight: Tensor) -> bool:
    """Whether the (n, C_out, C_in/g, kh, kw) kernels are stored channels_last (C_in/g innermost)."""
    if weight.shape[2] == 1 or weight.is_contiguous():
        return False
    return weight.permute(0, 1, 3, 4, 2).is_contiguous()


def _fold_choices(
    attentions: dict[str, Tensor], weight: Tensor, x: Tensor, geometry: ConvGeometry, per_sample: bool
) -> tuple[bool, bool]:
    """Fold a channel attention into the kernel when the kernel is smaller than the map it would scale."""
    if not per_sample:
        return False, False
    kernel_elements = weight.numel() // weight.shape[0]
    out_h, out_w = geometry.output_size(x.shape[-2], x.shape[-1])
    fold_input = "input" in attentions and kernel_elements < x.shape[1] * x.shape[-2] * x.shape[-1]
    fold_output = "output" in attentions and kernel_elements < weight.shape[1] * out_h * out_w
    return fold_input, fold_output


def _output_and_bias(
    attentions: dict[str, Tensor], bias: Tensor | None, fold_output: bool
) -> tuple[Tensor | None, Tensor | None]:
    """The bias to add and the output attention still to apply after the convolution."""
    output = attentions.get("output")
    sample_bias = mixed_bias(bias, attentions.get("kernel"))
    if fold_output:
        if sample_bias is not None:
            sample_bias = sample_bias * output
        output = None
    return sample_bias, output


def convolve_each_sample(
    x: Tensor, kernel: Tensor, geometry: ConvGeometry, formulation: Literal["grouped", "matmul"]
) -> Tensor:
    """Convolve each sample ``x_b`` with its own ``kernel_b``: the per-sample step of ``grouped`` and
    ``matmul``, no bias, no attention.

    ``kernel`` is (B, C_out, C_in/g, kh, kw), or (C_out, C_in/g, kh, kw) shared by the batch.
    ``grouped`` folds the batch into the groups of one convolution (one plain convolution for a
    shared kernel); ``matmul`` is im2col and a batched product, which ties no graph constant to the
    batch size (the export path).
    """
    g = geometry
    batch = x.shape[0]
    if formulation == "grouped":
        x = g.pad(x)
        if kernel.dim() == 4:
            return conv2d(x, kernel, g, g.groups)
        folded = x.reshape(1, -1, *x.shape[-2:])
        y = conv2d(folded, kernel.reshape(-1, *kernel.shape[2:]), g, g.groups * batch)
        return y.view(batch, -1, *y.shape[-2:])
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


def conv_grouped(
    x: Tensor, weight: Tensor, bias: Tensor | None, attentions: dict[str, Tensor], geometry: ConvGeometry
) -> Tensor:
    """Per-sample kernels, the batch folded into the groups of one convolution (bias included)."""
    per_sample = "kernel" in attentions or "spatial" in attentions or x.shape[0] == 1
    fold_input, fold_output = _fold_choices(attentions, weight, x, geometry, per_sample)
    kernel = _per_sample_kernel(weight, attentions, geometry.groups, fold_input, fold_output)
    if not fold_input:
        x = scale_channels(x, attentions.get("input"))
    x = geometry.pad(x)
    g = geometry
    sample_bias, output = _output_and_bias(attentions, bias, fold_output)
    if kernel.dim() == 4:
        return scale_channels(conv2d(x, kernel, g, g.groups, sample_bias), output)
    batch = x.shape[0]
    if sample_bias is not None and sample_bias.dim() == 1:  # a per-sample kernel, one bias for all
        sample_bias = sample_bias.expand(batch, -1)
    flat_bias = None if sample_bias is None else sample_bias.reshape(-1)
    folded = x if batch == 1 else x.reshape(1, -1, *x.shape[-2:])
    y = conv2d(folded, kernel.reshape(-1, *weight.shape[2:]), g, g.groups * batch, flat_bias)
    return scale_channels(y if batch == 1 else y.view(batch, -1, *y.shape[-2:]), output)


def conv_mixed(
    x: Tensor, weight: Tensor, bias: Tensor | None, attentions: dict[str, Tensor], geometry: ConvGeometry
) -> Tensor:
    """All n kernels as one static convolution, then a per-sample mix of the n outputs (and biases)."""
    if "spatial" in attentions:
        raise ValueError("formulation='mixed' is exact only without spatial attention (not for ODConv)")
    n, out_channels = weight.shape[:2]
    g = geometry
    groups = g.groups
    x = g.pad(scale_channels(x, attentions.get("input")))
    kernel, output = attentions.get("kernel"), attentions.get("output")
    if n == 1 or kernel is None:
        y = conv2d(x, weight.sum(0) if n > 1 else weight[0], g, groups)
        if kernel is not None:
            y = y * kernel.view(-1, 1, 1, 1)
        return scale_channels(add_bias(y, mixed_bias(bias, kernel)), output)
    # Output channels ordered (group, kernel, channel-in-group) so each group sees only its inputs;
    # each kernel's bias rides with its outputs, so the mix below mixes the biases too.
    if groups == 1:
        stacked = weight.reshape(n * out_channels, *weight.shape[2:])
        stacked_bias = None if bias is None else bias.view(-1)
    else:
        shape = (n, groups, out_channels // groups)
        stacked = weight.view(*shape, *weight.shape[2:]).transpose(0, 1).reshape(-1, *weight.shape[2:])
        stacked_bias = None if bias is None else bias.view(shape).transpose(0, 1).reshape(-1)
    y_all = conv2d(x, stacked, g, groups, stacked_bias)
    batch, _, out_h, out_w = y_all.shape
    if groups == 1:
        coefficients = kernel.view(batch, 1, n)
    else:
        coefficients = kernel.view(batch, 1, 1, n).expand(batch, groups, 1, n).reshape(batch * groups, 1, n)
    y = torch.bmm(coefficients, y_all.reshape(batch * groups, n, -1)).view(batch, out_channels, out_h, out_w)
    return scale_channels(y, output)


def conv_matmul(
    x: Tensor, weight: Tensor, bias: Tensor | None, attentions: dict[str, Tensor], geometry: ConvGeometry
) -> Tensor:
    """im2col and a batched matrix product with the per-sample kernels (the bias added in the product)."""
    per_sample = "kernel" in attentions or "spatial" in attentions
    fold_input, fold_output = _fold_choices(attentions, weight, x, geometry, per_sample)
    kernel = _per_sample_kernel(weight, attentions, geometry.groups, fold_input, fold_output)
    if not fold_input:
        x = scale_channels(x, attentions.get("input"))
    g = geometry
    batch = x.shape[0]
    out_h, out_w = g.output_size(x.shape[-2], x.shape[-1])
    x = g.pad(x)
    if g.kernel_size == (1, 1) and g.padding == (0, 0):
        columns = x[:, :, :: g.stride[0], :: g.stride[1]] if g.stride != (1, 1) else x
        columns = columns.reshape(batch, x.shape[1], out_h * out_w)
    else:
        columns = F.unfold(x, g.kernel_size, g.dilation, g.padding, g.stride)
    sample_bias, output = _output_and_bias(attentions, bias, fold_output)
    out_channels = weight.shape[1]
    if g.groups == 1 and kernel.dim() != 4:
        kernel = kernel.reshape(batch, out_channels, -1)
        if sample_bias is None:
            y = torch.bmm(kernel, columns)
        else:
            if sample_bias.dim() == 1:
                sample_bias = sample_bias.expand(batch, -1)
            y = torch.baddbmm(sample_bias.unsqueeze(2), kernel, columns)
        return scale_channels(y.view(batch, out_channels, out_h, out_w), output)
    columns = columns.view(batch, g.groups, -1, out_h * out_w)
    kernel = kernel.reshape(-1, g.groups, out_channels // g.groups, columns.shape[2])
    y = (kernel @ columns).view(batch, out_channels, out_h, out_w)
    return scale_channels(add_bias(y, sample_bias), output)


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


# --- The measured choice ("auto" with measuring on) --------------------------------------------------

# Formulations that run only on some inputs (a device, an optional package): name -> whether it runs
# compiled on this input, i.e. is worth timing or benchmarking there. A formulation in CONVOLUTIONS
# without an entry here runs everywhere. (Triton's CPU interpreter is for tests, not for speed.)
AVAILABILITY: dict[str, Callable[[Tensor], bool]] = {"triton": lambda x: x.is_cuda and _triton_available(x)}

# Timing one signature: one untimed warm-up round, then interleaved rounds until MEASURE_ROUNDS or, once
# MEASURE_BUDGET_S seconds have gone by, after the round that passed it (at least one timed round).
MEASURE_ROUNDS = 5
MEASURE_BUDGET_S = 1.0


class LayerChoices:
    """One layer's formulation choices by :func:`layer_choice_key`, so that a repeated call is one
    dictionary lookup; valid while ``choice_cache.CHOICES.generation`` is the one they were made under
    (measuring switched, choices cleared, the cache file moved)."""

    __slots__ = ("by_input", "generation")

    def __init__(self) -> None:
        self.by_input: dict[tuple[object, ...], str] = {}
        self.generation = CHOICES.generation

    def __deepcopy__(self, memo: dict) -> LayerChoices:
        return LayerChoices()  # a copied layer measures (or finds in the cache) for itself


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


def _layout(t: Tensor) -> str:
    if t.is_contiguous():
        return "contiguous"
    return (
        "channels_last" if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) else "strided"
    )


def _signature(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    attentions: dict[str, Tensor],
    geometry: ConvGeometry,
    training: bool,
) -> str:
    """What the cost of a call depends on, as the key of the process's and the file's choices: the
    layer's geometry, kernels (shape, dtype, layout), bias, the attentions applied, the input's shape,
    dtype, layout and device, grad mode, training, autocast, and (added by the cache) threads."""
    autocast = torch.is_autocast_enabled(x.device.type)
    return signature(
        (
            geometry,
            tuple(weight.shape),
            weight.dtype,
            "channels_last" if _is_channels_last(weight) else "contiguous",
            bias is not None,
            tuple(sorted(attentions)),
            tuple(x.shape),
            x.dtype,
            _layout(x),
            str(x.device),
            "grad" if torch.is_grad_enabled() else "no_grad",
            "train" if training else "eval",
            torch.get_autocast_dtype(x.device.type) if autocast else None,
        )
    )


def layer_choice_key(x: Tensor, attentions: dict[str, Tensor], training: bool) -> tuple[object, ...]:
    """What a layer's cached choice depends on between its calls (its own parameters aside)."""
    return (
        x.shape,
        x.dtype,
        x.device,
        x.is_contiguous(),
        torch.is_grad_enabled(),
        training,
        tuple(attentions),
    )


@torch.compiler.assume_constant_result
def _choice_while_tracing(layer_choices: LayerChoices, key: tuple[object, ...]) -> str | None:
    """The layer's choice for ``key``, read once while torch.compile traces: the graph is specialised
    to it, without guards on the layer's choices (which later eager calls may extend)."""
    return layer_choices.by_input.get(key)


def _capturing(x: Tensor) -> bool:
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


def select_formulation(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    attentions: dict[str, Tensor],
    geometry: ConvGeometry,
    training: bool,
    layer_choices: LayerChoices,
) -> str:
    """The formulation for ``"auto"``: the layer's cached choice for this input, else measured and
    cached where measuring is on (:mod:`fmdconv.layers.choice_cache`), else the hand rule.

    ``layer_choices``: the calling layer's own :class:`LayerChoices`. Never times while exporting
    (the rule's batch-independent choice), compiling or capturing a CUDA graph (the layer's cached
    choice if there is one, else the rule).
    """
    kernel_num, out_channels = weight.shape[:2]
    if is_exporting():
        return choose_formulation(attentions, kernel_num, geometry, x.shape, out_channels)
    key = layer_choice_key(x, attentions, training)
    if torch.compiler.is_compiling():
        chosen = _choice_while_tracing(layer_choices, key)
        return chosen or choose_formulation(attentions, kernel_num, geometry, x.shape, out_channels)
    if layer_choices.generation != CHOICES.generation:
        layer_choices.by_input.clear()
        layer_choices.generation = CHOICES.generation
    chosen = layer_choices.by_input.get(key)
    if chosen is not None:
        return chosen
    rule = choose_formulation(attentions, kernel_num, geometry, x.shape, out_channels)
    if _capturing(x):
        return rule
    mixes = "kernel" in attentions and kernel_num > 1
    if not benchmark_enabled() or ("spatial" not in attentions and not mixes):
        # The second case: one static convolution plus scalings, nothing can beat it.
        layer_choices.by_input[key] = rule
        return rule
    signature_key = _signature(x, weight, bias, attentions, geometry, training)
    chosen = CHOICES.get(signature_key)
    if chosen is None or chosen not in CONVOLUTIONS:
        start = time.perf_counter()
        times = measure_formulations(
            x, weight, bias, attentions, geometry, candidate_formulations(attentions, x)
        )
        chosen = min(times, key=times.__getitem__) if times else rule
        CHOICES.put(signature_key, chosen, time.perf_counter() - start)
    layer_choices.by_input[key] = chosen
    return chosen


def measure_formulations(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    attentions: dict[str, Tensor],
    geometry: ConvGeometry,
    names: tuple[str, ...],
    rounds: int = MEASURE_ROUNDS,
    budget_s: float = MEASURE_BUDGET_S,
) -> dict[str, float]:
    """The fastest time in seconds of each formulation in ``names`` for this call: forward, and
    backward too when grad is enabled and a tensor requires it (a gradient of ones, no random
    numbers drawn).

    The candidates run on detached copies with the same ``requires_grad`` flags, so no gradient
    reaches the caller's tensors and no autograd graph is kept. One untimed round warms each up
    (oneDNN's and cuDNN's own set-up, lazy initialisation); then up to ``rounds`` rounds interleave
    them, stopping after the round in which ``budget_s`` seconds of timing have passed. A candidate
    whose warm-up fails (out of memory, a kernel that does not compile) is left out.
    """

    def leaf(t: Tensor) -> Tensor:
        return t.detach().requires_grad_(t.requires_grad and torch.is_grad_enabled())

    x_, weight_ = leaf(x), leaf(weight)
    bias_ = None if bias is None else leaf(bias)
    attentions_ = {name: leaf(a) for name, a in attentions.items()}
    needs_grad = [t for t in (x_, weight_, bias_, *attentions_.values()) if t is not None and t.requires_grad]

    def call(convolution: Convolution) -> Callable[[], None]:
        def run() -> None:
            y = convolution(x_, weight_, bias_, attentions_, geometry)
            if needs_grad:
                torch.autograd.grad(y, needs_grad, torch.ones_like(y))

        return run

    runs: dict[str, Callable[[], None]] = {}
    for name in names:
        run = call(CONVOLUTIONS[name])
        try:
            run()
        except (RuntimeError, ValueError):  # out of memory, a kernel that does not compile here
            continue
        runs[name] = run
    times: dict[str, list[float]] = {name: [] for name in runs}
    start = time.perf_counter()
    for _ in range(rounds):
        for name, measured in time_interleaved(runs, 1, x.device, warmup=0).items():
            times[name] += measured
        if time.perf_counter() - start >= budget_s:
            break
    return {name: min(values) for name, values in times.items()}
