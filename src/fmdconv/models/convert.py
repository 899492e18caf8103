"""Turn the ``nn.Conv2d`` layers of any model into dynamic convolutions, in place: :func:`convert`.

Dynamic convolutions are drop-in replacements of static ones (CondConv, Yang et al. NeurIPS 2019;
DyConv, Chen et al. CVPR 2020; ODConv, Li et al. ICLR 2022; FMDConv, Zhang et al. KBS 2025), so a
model built with plain convolutions (a user's own, or a pretrained static backbone) can be converted
and fine-tuned. Each static weight is copied into every one of the n kernels; by default the
copies are scaled and the attentions start neutral so that the converted model computes exactly what
the static one did (see :func:`convert`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from fmdconv.layers import ConvSite, DynamicConv2d, create_conv2d, method_info, method_names


def _matches(name: str, patterns: Sequence[str] | None) -> bool:
    return patterns is not None and any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _check_patterns(argument: str, patterns: Sequence[str] | None) -> None:
    if patterns is None:
        return
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
        raise ValueError(
            f"{argument} must be a sequence of name patterns (e.g. ['layer4.*']), got {patterns!r}"
        )


def _neutral_attention_scales(layer: DynamicConv2d) -> tuple[float, float]:
    """Zero the attention logits; return the kernel and bias factors that then reproduce the static layer.

    With zero logits every sigmoid gate is 1/2, a softmax kernel attention is uniform (the mixed
    kernel is the mean of the n kernels) and CondConv's sigmoid routing weights are 1/2 each (the
    mixed kernel is n/2 times a common kernel). The layer computes
    ``output * (conv(input * x, spatial * mix(W)) + mix(b))``, so the kernel copies are divided by the
    product of those factors and the bias copies by the mix and output factors.
    """
    logit_layers: list[nn.Linear] = []
    if layer.gate is not None:
        logit_layers += list(layer.gate.heads.values())
    if layer.kernel_path is not None:  # its last linear layer gives the logits (an MLP's or a routing's)
        logit_layers.append([m for m in layer.kernel_path.modules() if isinstance(m, nn.Linear)][-1])
    for linear in logit_layers:
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
    attentions = set(layer.available_attentions)
    routing = layer.spec.kernel_activation == "sigmoid" and "kernel" in attentions
    mix = layer.kernel_num / 2 if routing else 1.0
    output = 0.5 if "output" in attentions else 1.0
    channel_and_spatial = 0.5 ** len(attentions & {"input", "spatial"})
    return mix * output * channel_and_spatial, mix * output


def _dynamic_copy(
    conv: nn.Conv2d, kind: str, kernel_num: int, preserve_output: bool, options: dict[str, Any]
) -> DynamicConv2d:
    layer = create_conv2d(
        kind,
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
        **options,
    )
    weight_scale, bias_scale = _neutral_attention_scales(layer) if preserve_output else (1.0, 1.0)
    with torch.no_grad():
        layer.weight.copy_((conv.weight / weight_scale).expand_as(layer.weight))
        if conv.bias is not None:
            layer.bias.copy_((conv.bias / bias_scale).expand_as(layer.bias))
    layer.train(conv.training)
    return layer


def convert(
    model: nn.Module,
    conv: str = "fmd",
    kernel_num: int = 4,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    keep_stem: bool = True,
    preserve_output: bool = True,
    **options: Any,
) -> nn.Module:
    """Replace the ``nn.Conv2d`` layers of ``model`` by dynamic convolutions of kind ``conv``, in place.

    Args:
        model: any module; its ``nn.Conv2d`` layers (exactly that class: subclasses may compute
            something else and are left alone) are candidates.
        conv: ``cond``, ``dy``, ``od``, ``fmd`` or ``fd`` (the methods whose record is
            ``convertible``). A method converts only the convolutions its record's rule takes:
            FDConv (Chen et al., CVPR 2025) those of :func:`~fmdconv.layers.fdconv_method.fd_replaces` (
            ``min(C_in, C_out) > 16``, 1x1 or 3x3, no groups), storing each weight as its spectrum
            as the authors' ``tools/convert_to_fdconv.py`` does; their tool converts a ResNet's
            ``conv1/2/3`` only, so pass ``exclude=["*downsample*"]`` to get
            ``create_model(..., conv="fd")``'s layout.
        kernel_num: number of kernels n.
        include: module-name patterns (``fnmatch``, e.g. ``["layer3.*", "layer4.*"]``); only matching
            convolutions are converted. Default: all.
        exclude: patterns of convolutions to leave static (applied after ``include``).
        keep_stem: leave the model's first convolution (in registration order, the stem of the usual
            backbones) static, as all four papers do; it sees the raw image (3 or 1 channels), where
            attention over the input channels has little to work with.
        preserve_output: start from exactly the static model. The attention layers that produce
            logits (the gate heads, the last layer of the kernel path) are zero-initialised, so every
            sigmoid gate is 1/2 and every kernel softmax uniform, and the copies of the static
            weight and bias are scaled to compensate (e.g. x8 for an ODConv 3x3 layer: input,
            output and spatial gates; x2/n for CondConv's routing). The earlier attention layers keep
            their random initialisation, so gradients reach them from the second step on. With
            ``False`` the static weight and bias are copied unscaled into every kernel and the
            attentions keep the layer's own initialisation: softmax methods then start with the
            static kernel, scaled by gates near 1/2.
        options: further options of the dynamic layers (``reduction``, ``hidden_ratio``,
            ``gate_temperature``, ``attention_init``, ...). ``attention_init="authors"`` matters only
            with ``preserve_output=False`` (preserving the output zeroes the logit layers anyway).

    Returns:
        ``model`` itself. Depthwise convolutions (one input channel per group) are converted too;
        ODConv and FMDConv then have no output attention, as in the authors' MobileNetV2.

    Raises:
        ValueError: ``conv`` not a dynamic kind, ``model`` itself a convolution (convert its parent,
            or build one with :func:`~fmdconv.layers.create_conv2d`), bad patterns or options.
    """
    convertible = [name for name in method_names() if method_info(name).convertible]
    if conv not in convertible:
        raise ValueError(f"conv must be a dynamic kind; accepted: {', '.join(convertible)}; got {conv!r}")
    info = method_info(conv)
    if type(model) is nn.Conv2d:
        raise ValueError("model is itself an nn.Conv2d: convert the module that contains it")
    _check_patterns("include", include)
    _check_patterns("exclude", exclude)
    convs = [(name, module) for name, module in model.named_modules() if type(module) is nn.Conv2d]
    stem = convs[0][0] if convs and keep_stem else None
    for name, module in convs:
        if name == stem or (include is not None and not _matches(name, include)) or _matches(name, exclude):
            continue
        site = ConvSite(None, module.in_channels, module.out_channels, module.kernel_size, module.groups)
        if not info.replaces_site(site):
            continue
        if info.from_static is not None:
            layer = info.from_static(module, kernel_num, preserve_output, options)
        else:
            layer = _dynamic_copy(module, conv, kernel_num, preserve_output, options)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer)
    return model
