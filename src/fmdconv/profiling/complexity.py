"""Parameters and multiply-accumulates (MACs) of any model, dynamic convolutions included: :func:`profile`.

MAC convention (per image; a model's figure is the sum over its layers; "MAdds" in the papers)
-----------------------------------------------------------------------------------------------
Counted layers are ``nn.Conv2d``, ``nn.Linear`` and the dynamic convolutions; BatchNorm, activations,
pooling outside the dynamic layers and residual additions are not counted, as in the papers' tables
(static ResNet-18 at 224x224: 1.814G).

static convolution
    ``C_out * H_out * W_out * (C_in / groups) * kh * kw``; a linear layer ``in * out``
    (per position of any extra leading dimension). Biases are not counted.
dynamic convolution, four parts (each reported separately):

    ``conv``
        the convolution with the per-sample kernel: the same count as the static layer.
    ``attention``
        global average pooling of the input, ``C_in * H_in * W_in``, plus every attention FC
        (gate trunk, its heads, the kernel MLP or routing FC), ``in * out`` each. A layer that takes
        its block's routing (``shared_routing``) and has no gate pools nothing: the block's
        :class:`~fmdconv.layers.SharedRouting` is counted once instead, as attention (the pooling
        of the block input plus its FC).
    ``aggregation``
        building the per-sample kernel: mixing the n kernels, ``n * K`` with
        ``K = C_out * C_in / groups * kh * kw`` (and ``n * C_out`` for the biases), when the layer has
        a kernel attention; multiplying the spatial attention into the mixed kernel, ``K``, when it
        has one.
    ``scaling``
        applying the input attention to the input map, ``C_in * H_in * W_in``, and the output
        attention to the output map, ``C_out * H_out * W_out``.

DCD (:class:`~fmdconv.layers.DCDConv2d`), which builds no mixed kernel, counts as it computes:
``conv`` is the static convolution plus the latent path at the output positions,
``H_out * W_out * (L * C_in + L * L + C_out * L)`` (Qᵀ, Φ, P); ``attention`` the pooling of the input
and the FCs of its attention path; ``scaling`` applying Λ to the static output, ``C_out * H_out *
W_out``; no ``aggregation``.

FDConv (:class:`~fmdconv.layers.FDConv2d`) counts as its parts compute, with every transform of N
real points (an ``rfft2`` or ``irfft2`` over an N-point matrix or map) counted as
``2 * N * log2(N)`` real MACs (N/2 · log2 N complex multiply-adds of a radix-2 FFT, 4 real MACs
each; :func:`~fmdconv.layers.fdconv_method.fft_macs`): ``conv`` the static convolution;
``attention`` the pooling, the global path's FCs (trunk and heads), the local path's 1-D
convolution (``C_out·kh·kw · C_in · width``) and FBM's gate convolutions
(``len(k_list) · 9 · C_in · H · W``); ``aggregation`` building the per-sample kernel: the spectrum
scaled by the group attentions (2 per bin), one ``irfft2`` of the (C_out·kh) x (C_in·kw) matrix,
and one product per gate over the kernel's K elements (local, spatial, input, output); ``scaling``
FBM: one ``rfft2`` and per band one masking (2 per bin), one ``irfft2`` and the gate product over
the map (``C_in · H · W``), per input channel. The count is that of the ``direct`` formulation;
``mixture`` and ``dft`` compute the same with other work.

KernelWarehouse (:class:`~fmdconv.layers.KWConv2d`): ``conv`` is the static count; ``attention``
the pooling of the input plus FC1 and FC2 (``in * out`` each) and, with the nonlocal basis, FC3
once per mixture (``m * basis * others``); ``aggregation`` building the per-sample kernel from the
warehouse, ``n * K`` (each of the m cells of ``K / m`` elements mixes all n warehouse cells); no
``scaling``. Its warehouse's parameters are the model's (``model.warehouses``), counted once in the
model's total and in no layer's row.

The count is analytic, from the shapes a forward pass shows to hooks and the attentions each layer
has (ablated attentions, see :func:`~fmdconv.layers.set_attentions`, are not counted); the layers that
are not presets of DynamicConv2d (DCD, FDConv, KernelWarehouse) count through their record's
``macs`` (:class:`~fmdconv.layers.MethodInfo`), which the formulas above describe. It does not
depend on which exact formulation (``grouped``, ``mixed``, ``matmul``) the layer happens to run,
some of which do more work for the same result.

Relation to the published figures (ImageNet ResNet-18, 224x224; tested in ``tests/test_profile.py``):
the static part matches (1.814G), and the DyConv 4x figure (1.861G) is reproduced by this convention.
For ODConv this convention gives 1.830G (1x) and 1.874G (4x) against the authors' 1.838G and 1.916G:
the authors' figures equal, to 0.1%, the static MACs plus the attention MACs plus
``(2n + [n > 1]) * K`` per layer, i.e. they charge the spatial and the kernel attention products on
each of the n kernels separately (where mixing first and applying the spatial attention once
suffices) and do not charge the feature-map scalings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from fmdconv.layers import DynamicConv2d, SharedRouting
from fmdconv.layers.fdconv_method import fft_macs as fft_macs  # also here, where it was first public
from fmdconv.layers.helpers import kernel_elements
from fmdconv.layers.registry import dynamic_layer_types, record_of_layer

MAC_PARTS = ("conv", "attention", "aggregation", "scaling")


@dataclass(frozen=True)
class LayerProfile:
    """One call of a counted layer: its shapes (per image, without the batch), parameters and MACs."""

    name: str
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    conv: int
    attention: int = 0
    aggregation: int = 0
    scaling: int = 0

    @property
    def macs(self) -> int:
        return self.conv + self.attention + self.aggregation + self.scaling


@dataclass(frozen=True)
class ModelProfile:
    """Parameters and per-image MACs of a model for one input size, with the per-layer table."""

    input_size: tuple[int, ...]
    params: int
    layers: tuple[LayerProfile, ...] = field(repr=False)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def breakdown(self) -> dict[str, int]:
        """Total MACs of each part (``conv`` includes the static layers and ``nn.Linear``)."""
        return {part: sum(getattr(layer, part) for layer in self.layers) for part in MAC_PARTS}

    def table(self, max_rows: int | None = None) -> str:
        """The per-layer table as text (the ``max_rows`` layers with most MACs, in model order)."""
        layers = list(self.layers)
        if max_rows is not None and max_rows < len(layers):
            keep = set(sorted(range(len(layers)), key=lambda i: -layers[i].macs)[:max_rows])
            layers = [layer for i, layer in enumerate(layers) if i in keep]
        header = ("layer", "type", "output", "params", "MACs", "conv", "attention", "aggregation", "scaling")
        rows = [
            (
                layer.name,
                layer.type,
                "x".join(map(str, layer.output_shape)),
                f"{layer.params:,}",
                f"{layer.macs:,}",
                *(f"{getattr(layer, part):,}" for part in MAC_PARTS),
            )
            for layer in layers
        ]
        rows.append(
            (
                "total",
                "",
                "",
                f"{self.params:,}",
                f"{self.macs:,}",
                *(f"{v:,}" for v in self.breakdown.values()),
            )
        )
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(w) if i < 3 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in [header, *rows]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON: totals, the MAC breakdown and every layer."""
        return {
            "input_size": list(self.input_size),
            "params": self.params,
            "macs": self.macs,
            "breakdown": self.breakdown,
            "layers": [{**asdict(layer), "macs": layer.macs} for layer in self.layers],
        }


def _attention_fc_macs(layer: DynamicConv2d) -> int:
    paths = [path for path in (layer.gate, layer.kernel_path) if path is not None]
    return sum(m.weight.numel() for path in paths for m in path.modules() if isinstance(m, nn.Linear))


def _layer_profile(name: str, module: nn.Module, inputs: Tensor, output: Tensor) -> LayerProfile:
    params = sum(p.numel() for p in module.parameters())
    kind = type(module).__name__
    in_shape, out_shape = tuple(inputs.shape[1:]), tuple(output.shape[1:])
    if isinstance(module, nn.Linear):
        positions = math.prod(out_shape[:-1])
        return LayerProfile(name, kind, in_shape, out_shape, params, positions * module.weight.numel())
    if isinstance(module, SharedRouting):
        attention = math.prod(in_shape) * (len(in_shape) == 3) + module.fc.weight.numel()
        return LayerProfile(name, kind, in_shape, out_shape, params, conv=0, attention=attention)
    record = record_of_layer(module)
    if record is not None and record.macs is not None:
        return LayerProfile(
            name, kind, in_shape, out_shape, params, **record.macs(module, in_shape, out_shape)
        )
    kernel = kernel_elements(module)
    conv = math.prod(out_shape[-2:]) * kernel
    if not isinstance(module, DynamicConv2d):
        return LayerProfile(name, kind, in_shape, out_shape, params, conv)
    attentions = set(module.available_attentions) - module.disabled_attentions
    input_elements, output_elements = math.prod(in_shape), math.prod(out_shape)
    aggregation = 0
    if "kernel" in attentions:
        aggregation += module.kernel_num * (kernel + (module.out_channels if module.bias is not None else 0))
    if "spatial" in attentions:
        aggregation += kernel
    scaling = input_elements * ("input" in attentions) + output_elements * ("output" in attentions)
    pools = module.gate is not None or module.kernel_path is not None
    attention = input_elements * pools + _attention_fc_macs(module)
    return LayerProfile(name, kind, in_shape, out_shape, params, conv, attention, aggregation, scaling)


def _counted_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Convolutions, linear layers, dynamic convolutions and shared routings, not the FCs inside them."""
    counted: list[tuple[str, nn.Module]] = []
    dynamic_prefixes: list[str] = []
    dynamic = (*dynamic_layer_types(), SharedRouting)
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in dynamic_prefixes):
            continue
        if isinstance(module, dynamic):
            dynamic_prefixes.append(f"{name}." if name else "")
        if isinstance(module, (*dynamic, nn.Conv2d, nn.Linear)):
            counted.append((name, module))
    return counted


def profile(model: nn.Module, input_size: tuple[int, ...] = (3, 224, 224)) -> ModelProfile:
    """Count the parameters and the per-image MACs of ``model`` for inputs of ``input_size`` (C, H, W).

    Runs one forward pass of a single random image in eval mode, without gradients, on the model's
    device and dtype, with hooks that record each counted layer's shapes (a layer called twice is
    listed twice); the training flags of all modules are restored afterwards. A model on the meta
    device (built under ``with torch.device("meta"):``) is counted from shapes alone, without memory
    or computation. The convention is in this module's docstring and in ``docs/models.md``.
    """
    if not (
        isinstance(input_size, tuple | list)
        and input_size
        and all(isinstance(s, int) and s > 0 for s in input_size)
    ):
        raise ValueError(
            f"input_size must be a tuple of positive ints such as (3, 224, 224), got {input_size!r}"
        )
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    records: list[LayerProfile] = []
    hooks = [
        module.register_forward_hook(
            lambda module, inputs, output, name=name: records.append(
                _layer_profile(name, module, inputs[0], output)
            )
        )
        for name, module in _counted_modules(model)
    ]
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(torch.randn(1, *input_size, device=device, dtype=dtype))
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes.items():
            module.training = training
    params = sum(p.numel() for p in model.parameters())
    return ModelProfile(tuple(input_size), params, tuple(records))
