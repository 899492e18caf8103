"""Build a backbone by name with any convolution of the family: :func:`create_model`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fmdconv.layers import CONV_KINDS
from fmdconv.layers.feature_attention import FEATURE_ATTENTIONS
from fmdconv.models.conv_factory import ConvFactory
from fmdconv.models.features import FeatureBackbone
from fmdconv.models.kernelwarehouse import KW_SETTING_OPTIONS, kw_settings, share_warehouses
from fmdconv.models.mobilenetv2 import MobileNetV2
from fmdconv.models.resnet import STAGE_WIDTHS, BasicBlock, Bottleneck, ResNet


def _resnet(block: type[BasicBlock | Bottleneck], depths: tuple[int, int, int, int]) -> Callable[..., ResNet]:
    def build(
        conv: ConvFactory,
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
            block, depths, conv, num_classes, stem, in_chans, widths, dropout=dropout, attention=attention
        )

    return build


def _mobilenet_v2(
    conv: ConvFactory,
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
    return MobileNetV2(conv, num_classes, width, in_chans, dropout, stem)


MODELS: dict[str, Callable[..., FeatureBackbone]] = {
    "mobilenet_v2": _mobilenet_v2,
    "resnet18": _resnet(BasicBlock, (2, 2, 2, 2)),
    "resnet34": _resnet(BasicBlock, (3, 4, 6, 3)),
    "resnet50": _resnet(Bottleneck, (3, 4, 6, 3)),
    "resnet101": _resnet(Bottleneck, (3, 4, 23, 3)),
}


# A "method" of the papers' tables: a convolution kind, or a feature attention on the static backbone.
METHODS: tuple[str, ...] = (*CONV_KINDS, *FEATURE_ATTENTIONS)


def method_options(method: str) -> dict[str, str | None]:
    """The :func:`create_model` arguments ``conv`` and ``attention`` of a method of :data:`METHODS`."""
    if method in FEATURE_ATTENTIONS:
        return {"conv": "static", "attention": method}
    if method in CONV_KINDS:
        return {"conv": method, "attention": None}
    raise ValueError(f"unknown method {method!r}; accepted: {', '.join(METHODS)}")


def dcd_mobilenet_v2_fc_squeeze(width: float) -> int:
    """DCD's default ``fc_squeeze`` for MobileNetV2 at ``width``: 16 from 0.75 up, else 8.

    The ODConv paper's DCD rows (5.72M at 1.0x, 4.08M at 0.75x, 3.06M at 0.5x) are the DCD code's
    counts with fc_squeeze 16, 16 and 8 (docs/design.md, section 10; tested in ``tests/test_dcd.py``).
    """
    return 16 if width >= 0.75 else 8


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
    (:func:`~fmdconv.models.conv_factory.fd_replaces`); ``kernel_num`` is its number of frequency
    groups (the authors' detection models: 64).

    Args:
        name: one of :func:`list_models`.
        conv: ``static``, ``cond``, ``dy``, ``od``, ``fmd``, ``dcd`` or ``fd``.
        kernel_num: number of kernels n of each dynamic convolution.
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
            :func:`dcd_mobilenet_v2_fc_squeeze`, others 16), ``latent_dim``, ``pool_size``,
            ``squeeze_channels``).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; accepted: {', '.join(list_models())}")
    if conv == "fd" and name == "mobilenet_v2":
        raise ValueError(
            "conv='fd' builds ResNets only: the FDConv authors have no MobileNetV2 and their layer "
            "cannot take its depthwise convolutions; accepted models for fd: "
            + ", ".join(m for m in list_models() if m.startswith("resnet"))
        )
    if conv == "dcd" and name == "mobilenet_v2" and "fc_squeeze" not in conv_options:
        conv_options["fc_squeeze"] = dcd_mobilenet_v2_fc_squeeze(width)
    if attention is not None and attention not in FEATURE_ATTENTIONS:
        raise ValueError(f"unknown attention {attention!r}; accepted: None, {', '.join(FEATURE_ATTENTIONS)}")
    kw = _kernelwarehouse_settings(name, conv, conv_options)
    factory = ConvFactory(conv, kernel_num, model=name, **conv_options)
    model = MODELS[name](factory, num_classes, stem, width, dropout, in_chans, attention)
    if kw is not None:
        share_warehouses(model, name, kw)
    return model.to_features(out_indices) if features_only else model


def _kernelwarehouse_settings(name: str, conv: str, conv_options: dict[str, Any]) -> Any:
    """KernelWarehouse's settings, taken out of ``conv_options`` (None for the other methods)."""
    if conv != "kw":
        own = sorted(
            key for key in ("kw_ratio", *KW_SETTING_OPTIONS) if key in conv_options and key != "reduction"
        )
        if own:
            raise ValueError(f"{', '.join(own)} apply to conv='kw' only, got conv={conv!r}")
        return None
    given = {key: conv_options.pop(key) for key in KW_SETTING_OPTIONS if key in conv_options}
    return kw_settings(name, conv_options.pop("kw_ratio", 1), **given)
