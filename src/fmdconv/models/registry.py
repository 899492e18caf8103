"""Build a backbone by name with any convolution of the family: :func:`create_model`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fmdconv.layers import FEATURE_ATTENTIONS, MethodInfo, conv_info, conv_names, method_info

# A "method" of the papers' tables: a convolution kind, or a feature attention on the static backbone
# (the built-in ones; fmdconv.layers.method_names() also lists methods registered later).
from fmdconv.layers.registry import METHODS as METHODS
from fmdconv.models.conv_factory import ConvFactory, backbone_assembly
from fmdconv.models.features import FeatureBackbone
from fmdconv.models.mobilenetv2 import MobileNetV2
from fmdconv.models.resnet import STAGE_WIDTHS, BasicBlock, Bottleneck, ResNet


def _resnet(block: type[BasicBlock | Bottleneck], depths: tuple[int, int, int, int]) -> Callable[..., ResNet]:
    def build(
        factory: ConvFactory,
        num_classes: int,
        stem: str,
        width: float,
        dropout: float,
        in_chans: int,
        attention: str | None,
    ) -> ResNet:
        if not 0 < width <= 4:
            raise ValueError(f"width must be in (0, 4], got {width!r}")
        # Narrow ResNets (e.g. width=0.25 for quick CPU runs) scale the four stage widths alike.
        widths = tuple(max(1, round(w * width)) for w in STAGE_WIDTHS)
        return ResNet(
            block,
            depths,
            factory,
            num_classes=num_classes,
            stem=stem,
            in_chans=in_chans,
            widths=widths,
            dropout=dropout,
            attention=attention,
        )

    return build


def _mobilenet_v2(
    factory: ConvFactory,
    num_classes: int,
    stem: str,
    width: float,
    dropout: float,
    in_chans: int,
    attention: str | None,
) -> MobileNetV2:
    if attention is not None:
        raise ValueError(
            f"attention={attention!r}: the feature attentions (SE, CBAM, ECA) are offered on the ResNets, "
            "where the papers place them; mobilenet_v2 takes attention=None"
        )
    return MobileNetV2(
        factory, num_classes=num_classes, width=width, in_chans=in_chans, dropout=dropout, stem=stem
    )


MODELS: dict[str, Callable[..., FeatureBackbone]] = {
    "mobilenet_v2": _mobilenet_v2,
    "resnet18": _resnet(BasicBlock, (2, 2, 2, 2)),
    "resnet34": _resnet(BasicBlock, (3, 4, 6, 3)),
    "resnet50": _resnet(Bottleneck, (3, 4, 6, 3)),
    "resnet101": _resnet(Bottleneck, (3, 4, 23, 3)),
}


def method_options(method: str) -> dict[str, str | None]:
    """The :func:`create_model` arguments ``conv`` and ``attention`` of a method of :data:`METHODS`."""
    info = method_info(method)
    return {"conv": info.conv, "attention": info.attention}


# create_model options of every dynamic method besides its layer's (or its builder's) options.
_BACKBONE_OPTIONS = ("replaced_roles", "shared_routing")


def accepted_options(info: MethodInfo) -> tuple[str, ...]:
    """The ``**conv_options`` :func:`create_model` takes for convolution method ``info``: its layer's
    options (but ``kernel_num``, an argument of its own) and ``bias``, or for a method with a backbone
    builder that builder's options; then ``replaced_roles`` and ``shared_routing``. None for
    ``static``."""
    if not info.dynamic:
        return ()
    assembly = backbone_assembly(info)
    if assembly is not None:
        return (*assembly.options, *_BACKBONE_OPTIONS)
    return (*(o for o in info.layer_options if o != "kernel_num"), *_BACKBONE_OPTIONS, "bias")


def check_conv_options(conv: str, conv_options: dict[str, Any], attention: str | None = None) -> None:
    """A ValueError naming the method and the options it accepts, for an option ``conv`` has no use for."""
    info = conv_info(conv)
    accepted = accepted_options(info)
    unknown = sorted(set(conv_options) - set(accepted))
    if not unknown:
        return
    if not info.dynamic:
        on = f" (attention={attention!r} is a feature attention on it, with no options)" if attention else ""
        raise ValueError(f"conv={conv!r} takes no dynamic options, got {unknown}{on}")
    owners = [name for name in conv_names() if set(unknown) <= set(accepted_options(conv_info(name)))]
    if owners:
        raise ValueError(
            f"{', '.join(unknown)} apply to {' or '.join(f'conv={o!r}' for o in owners)} only, got "
            f"conv={conv!r}; {info.label}'s options: {', '.join(accepted)}"
        )
    raise ValueError(
        f"conv={conv!r} ({info.label}) has no option {', '.join(unknown)}; its options: {', '.join(accepted)}"
    )


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(MODELS)


def create_model(
    name: str,
    conv: str = "fmd",
    kernel_num: int = 4,
    num_classes: int = 1000,
    stem: str = "imagenet",
    width: float = 1.0,
    dropout: float = 0.0,
    in_chans: int = 3,
    features_only: bool = False,
    out_indices: Sequence[int] = (1, 2, 3, 4),
    attention: str | None = None,
    **conv_options: Any,
) -> FeatureBackbone:
    """A backbone whose convolutions are of kind ``conv``, replaced where the method's papers do.

    Which convolutions are dynamic (see :mod:`fmdconv.models.conv_factory`): ODConv (Li et al.,
    ICLR 2022), FMDConv (Zhang et al., KBS 2025) and CondConv (Yang et al., NeurIPS 2019) replace
    every convolution of the residual blocks and MobileNetV2's last 1x1 convolution; DyConv (Chen et
    al., CVPR 2020) also replaces ResNet's downsample convolutions. The stem stays static. CondConv's
    MobileNetV2 follows the CondConv paper: experts in the final 6 blocks and the classifier, one
    routing function per block (``replaced_roles={"block", "late_block", "head"}`` and
    ``shared_routing=False`` give the ODConv-style layout instead). DCD (Li et al., ICLR 2021)
    replaces the full convolutions of the blocks (not MobileNetV2's first block nor its depthwise
    convolutions) and the classifier, as the DCD code does; ``kernel_num`` does not apply to it.
    FDConv (Chen et al., CVPR 2025; ResNets only) replaces the block convolutions with
    ``min(C_in, C_out) > 16`` and 1x1 or 3x3 kernels, as the authors' ResNet
    (:func:`~fmdconv.layers.fdconv_method.fd_replaces`); ``kernel_num`` is its number of frequency
    groups (the authors' detection models: 64). KernelWarehouse (Li and Yao, ICML 2024) shares
    warehouses per stage (:mod:`fmdconv.models.kernelwarehouse`). Each method's layout is its record
    (:func:`~fmdconv.layers.method_info`).

    Args:
        name: one of :func:`list_models`.
        conv: ``static``, ``cond``, ``dy``, ``od``, ``fmd``, ``dcd``, ``fd`` or ``kw``
            (:func:`~fmdconv.layers.conv_names`).
        kernel_num: number of kernels n of each dynamic convolution (for the methods that take one).
        num_classes: classifier outputs.
        stem: ``"imagenet"`` or ``"cifar"`` (3x3 stride-1 first convolution, no max-pool).
        width: MobileNetV2 width multiplier (1.0, 0.75, 0.5 in the papers); for ResNets, a factor on
            the stage widths 64/128/256/512 (1.0 in the papers).
        dropout: dropout before the classifier.
        in_chans: input channels (1 for grey images).
        features_only: return the multi-scale feature maps of levels ``out_indices`` (strides
            2, 4, 8, 16, 32 for levels 0-4 with the ImageNet stem) instead of logits; their channels
            and strides are in ``model.out_feature_info``.
        attention: a feature attention on every residual block's branch, before the addition:
            ``se`` (Hu et al., CVPR 2018), ``cbam`` (Woo et al., ECCV 2018) or ``eca`` (Wang et al.,
            CVPR 2020), see :mod:`fmdconv.layers.feature_attention`; ResNets only; composes with
            any ``conv``.
        conv_options: options of the dynamic layers (``reduction``, ``hidden_ratio``,
            ``gate_temperature``, ``kernel_temperature``, ``min_channels``, ``attention_init``
            (``"zero"``, the default, or ``"authors"``; see :class:`~fmdconv.layers.DynamicConv2d`);
            ``replaced_roles`` to override which roles are dynamic, ``shared_routing`` for CondConv's
            routing per block; DCD's ``fc_squeeze`` (MobileNetV2 default:
            :func:`~fmdconv.layers.dcd.dcd_mobilenet_v2_fc_squeeze`, others 16), ``latent_dim``,
            ``pool_size``, ``squeeze_channels``; KernelWarehouse's ``kw_ratio`` and settings).
            :func:`accepted_options` lists a method's; any other is a ValueError naming them.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; accepted: {', '.join(list_models())}")
    info = conv_info(conv)
    if name in info.unsupported_models:
        others = [m for m in list_models() if m not in info.unsupported_models]
        raise ValueError(
            f"conv={conv!r} builds no {name}: {info.unsupported_models[name]}; accepted models for "
            f"{conv}: {', '.join(others)}"
        )
    if attention is not None and attention not in FEATURE_ATTENTIONS:
        raise ValueError(f"unknown attention {attention!r}; accepted: None, {', '.join(FEATURE_ATTENTIONS)}")
    check_conv_options(conv, conv_options, attention)
    if info.backbone_options is not None:
        conv_options = info.backbone_options(name, width) | conv_options
    assembly = backbone_assembly(info)
    settings = assembly.settings(name, conv_options) if assembly is not None else None
    factory = ConvFactory(conv, kernel_num, model=name, **conv_options)
    model = MODELS[name](
        factory,
        num_classes=num_classes,
        stem=stem,
        width=width,
        dropout=dropout,
        in_chans=in_chans,
        attention=attention,
    )
    if assembly is not None:
        assembly.assemble(model, name, settings)
    return model.to_features(out_indices) if features_only else model
