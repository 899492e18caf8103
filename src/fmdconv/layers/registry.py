"""One record per method, :class:`MethodInfo`, read by everything that treats methods differently.

A *method* is a convolution (``static`` and the dynamic ones, ``conv=`` in the API and ``--conv`` on
the command line) or a feature attention on the static backbone (``se``, ``cbam``, ``eca``). Its
record holds the facts the rest of the library needs: the layer class, the name in reports, which
convolutions of a backbone it replaces (by role, with per-backbone exceptions), the options it
takes, and hooks for a layer that is not a preset of :class:`~fmdconv.layers.DynamicConv2d`.
:func:`~fmdconv.layers.create_conv2d`, :class:`~fmdconv.layers.DynamicLinear`, the backbones
(:class:`~fmdconv.models.ConvFactory`, :func:`~fmdconv.models.create_model`),
:func:`~fmdconv.models.convert`, :func:`~fmdconv.profiling.profile` and the benchmarks read it.

Adding a method is one layer module and one record in :data:`BUILT_IN` (docs/adding_a_method.md);
:func:`register_method` adds one at run time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from fmdconv.layers.dcd import (
    DCD_CLASSIFIER_OPTIONS,
    DCDConv2d,
    dcd_backbone_options,
    dcd_layer_options,
    dcd_macs,
    init_dcd_classifier,
)
from fmdconv.layers.dynamic_conv import DynamicConv2d
from fmdconv.layers.fdconv import FDConv2d
from fmdconv.layers.fdconv_method import fd_from_static, fd_macs, fd_replaces
from fmdconv.layers.feature_attention import FEATURE_ATTENTIONS
from fmdconv.layers.kernelwarehouse import KWConv2d, kw_macs
from fmdconv.layers.methods import CondConv2d, DyConv2d, FMDConv2d, ODConv2d

# The places of a backbone's convolutions (models/conv_factory.py describes each).
ROLES: tuple[str, ...] = ("stem", "block", "late_block", "downsample", "head", "classifier")
# The temperatures the papers anneal, as DynamicConvSpec names them.
TEMPERATURES = ("gate", "kernel")
_CONV2D_ARGUMENTS = frozenset(inspect.signature(nn.Conv2d).parameters)


@dataclass(frozen=True)
class ConvSite:
    """One convolution of a backbone, as a method's replacement rule and per-layer options see it.

    ``expanded`` is False in a MobileNetV2 block without an expansion (``features.1``).
    """

    model: str | None
    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, int]
    groups: int = 1
    expanded: bool = True


@dataclass(frozen=True)
class Layout:
    """The roles a method replaces in one backbone, and whether a block's convolutions share one
    routing function (CondConv's MobileNetV2)."""

    replaced_roles: frozenset[str]
    shared_routing: bool = False


@dataclass(frozen=True)
class MethodInfo:
    """Everything the library knows about one method.

    Attributes:
        name: the method's name in the API and on the command line (``conv="fmd"``).
        label: its name in reports and tables (``"FMDConv"``).
        layer: the class :func:`~fmdconv.layers.create_conv2d` builds (``nn.Conv2d`` for ``static``
            and the feature attentions).
        replaced_roles: the backbone roles (:data:`ROLES`) it makes dynamic by default.
        layouts: backbone name -> :class:`Layout`, where the method's paper lays that backbone out
            its own way.
        backbone_bias: per-kernel biases of its layers in the backbones, where they differ from
            the layer's default (None: the layer's default).
        attention: for a feature-attention method, that attention on the static backbone.
        shared_routing: whether a block's convolutions can share one routing function.
        unsupported_models: backbone name -> why the method builds no such backbone.
        replaces: which convolutions of a replaced role it makes dynamic (None: every one).
        site_options: the options of one convolution of a backbone (DCD's latent sizes).
        backbone_options: ``(model, width)`` -> options every layer of that backbone gets unless
            the user sets them (DCD's MobileNetV2 ``fc_squeeze``).
        classifier_options: where the classifier takes fixed options of its own instead of the
            convolutions' (DCD's), those.
        classifier_init: called on the classifier's layer after it is built.
        from_static: ``(conv, kernel_num, preserve_output, options)`` -> the layer
            :func:`~fmdconv.models.convert` puts in place of ``conv``, for a layer that is not a
            DynamicConv2d preset (whose copy is generic); None with no preset: not convertible.
        macs: ``(layer, input_shape, output_shape)`` -> MACs by part (``conv``, ``attention``,
            ``aggregation``, ``scaling``), for a layer that is not a DynamicConv2d preset.
        assembly: ``"module:object"`` of a backbone-level builder, for a method whose layers share
            parameters across the backbone (KernelWarehouse's warehouses): the object has
            ``options`` (the ``create_model`` options it takes), ``settings(model, options)``
            (takes them out of ``options``), ``placeholder(in_channels, out_channels,
            kernel_size, stride, padding, groups)`` and ``assemble(model, name, settings)``.
    """

    name: str
    label: str
    layer: type[nn.Module]
    replaced_roles: frozenset[str] = frozenset()
    layouts: Mapping[str, Layout] = field(default_factory=dict)
    backbone_bias: bool | None = None
    attention: str | None = None
    shared_routing: bool = False
    unsupported_models: Mapping[str, str] = field(default_factory=dict)
    replaces: Callable[[ConvSite], bool] | None = None
    site_options: Callable[[ConvSite], dict[str, Any]] | None = None
    backbone_options: Callable[[str, float], dict[str, Any]] | None = None
    classifier_options: Mapping[str, Any] | None = None
    classifier_init: Callable[[nn.Module], None] | None = None
    from_static: Callable[[nn.Conv2d, int, bool, dict[str, Any]], nn.Module] | None = None
    macs: Callable[[nn.Module, tuple[int, ...], tuple[int, ...]], dict[str, int]] | None = None
    assembly: str | None = None

    def __post_init__(self) -> None:
        roles = {
            *self.replaced_roles,
            *(r for layout in self.layouts.values() for r in layout.replaced_roles),
        }
        unknown = roles - set(ROLES)
        if unknown:
            raise ValueError(f"{self.name}: unknown roles {sorted(unknown)}; accepted: {', '.join(ROLES)}")

    @property
    def conv(self) -> str:
        """The ``conv`` argument of :func:`~fmdconv.models.create_model` for this method."""
        return "static" if self.attention is not None else self.name

    @property
    def dynamic(self) -> bool:
        """Whether the method builds dynamic layers."""
        return self.layer is not nn.Conv2d

    @property
    def kernel_mixture(self) -> bool:
        """Whether its layer mixes n kernels (a :class:`~fmdconv.layers.DynamicConv2d` preset)."""
        return issubclass(self.layer, DynamicConv2d)

    @property
    def layer_options(self) -> tuple[str, ...]:
        """The keyword options its layer takes beyond nn.Conv2d's arguments, in signature order."""
        if not self.dynamic:
            return ()
        return tuple(
            p.name
            for p in inspect.signature(self.layer).parameters.values()
            if p.name not in _CONV2D_ARGUMENTS
            and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        )

    def takes(self, option: str) -> bool:
        """Whether its layer takes ``option`` (``kernel_num``, ``attention_init``, ...)."""
        return option in self.layer_options

    @property
    def temperatures(self) -> tuple[str, ...]:
        """The attention temperatures the papers anneal (``gate``, ``kernel``), from its spec."""
        if not self.kernel_mixture:
            return ()
        spec = self.layer.spec  # type: ignore[attr-defined]
        return tuple(t for t in TEMPERATURES if getattr(spec, f"{t}_temperature") is not None)

    @property
    def convertible(self) -> bool:
        """Whether :func:`~fmdconv.models.convert` can turn static convolutions into its layers."""
        return self.kernel_mixture or self.from_static is not None

    def layout(self, model: str | None) -> Layout:
        """Its layout of backbone ``model`` (the default roles where it has no exception)."""
        return self.layouts.get(model or "", Layout(self.replaced_roles))

    def replaces_site(self, site: ConvSite) -> bool:
        """Whether it makes this convolution of a replaced role dynamic."""
        return self.replaces is None or self.replaces(site)


def _dcd_replaces(site: ConvSite) -> bool:
    # The DCD code keeps depthwise convolutions and MobileNetV2's unexpanded first block static.
    return site.groups == 1 and site.expanded


def _dcd_site_options(site: ConvSite) -> dict[str, Any]:
    return dcd_layer_options(site.model, site.in_channels, site.out_channels)


def _fd_replaces(site: ConvSite) -> bool:
    return fd_replaces(site.in_channels, site.out_channels, site.kernel_size, site.groups)


_ODCONV_ROLES = frozenset({"block", "late_block", "head"})

BUILT_IN: tuple[MethodInfo, ...] = (
    MethodInfo("static", "Static", nn.Conv2d),
    # CondConv: ODConv's layout, except MobileNetV2, where the CondConv paper puts experts in the
    # final 6 blocks and the classifier, one routing per block. DyConv also replaces ResNet's
    # downsamples (the ODConv paper's DyConv baseline). Neither has biases in its backbones.
    MethodInfo(
        "cond",
        "CondConv",
        CondConv2d,
        _ODCONV_ROLES,
        layouts={"mobilenet_v2": Layout(frozenset({"late_block", "classifier"}), shared_routing=True)},
        backbone_bias=False,
        shared_routing=True,
    ),
    MethodInfo("dy", "DyConv", DyConv2d, _ODCONV_ROLES | {"downsample"}, backbone_bias=False),
    MethodInfo("od", "ODConv", ODConv2d, _ODCONV_ROLES),
    MethodInfo("fmd", "FMDConv", FMDConv2d, _ODCONV_ROLES),
    MethodInfo(
        "dcd",
        "DCD",
        DCDConv2d,
        frozenset({"block", "late_block", "classifier"}),
        replaces=_dcd_replaces,
        site_options=_dcd_site_options,
        backbone_options=dcd_backbone_options,
        classifier_options=MappingProxyType(DCD_CLASSIFIER_OPTIONS),
        classifier_init=init_dcd_classifier,  # type: ignore[arg-type]
        macs=dcd_macs,  # type: ignore[arg-type]
    ),
    MethodInfo(
        "fd",
        "FDConv",
        FDConv2d,
        frozenset({"block"}),
        unsupported_models={
            "mobilenet_v2": "it builds ResNets only, as the FDConv authors have no MobileNetV2 and their "
            "layer cannot take its depthwise convolutions"
        },
        replaces=_fd_replaces,
        from_static=fd_from_static,  # type: ignore[arg-type]
        macs=fd_macs,  # type: ignore[arg-type]
    ),
    # KernelWarehouse: the block convolutions and the stride-2 downsamples (a stride-1 one stays
    # static, models/kernelwarehouse.py); its MobileNetV2 layout adds the stem.
    MethodInfo(
        "kw",
        "KernelWarehouse",
        KWConv2d,
        _ODCONV_ROLES | {"downsample"},
        layouts={"mobilenet_v2": Layout(frozenset({"stem", "block", "late_block", "head"}))},
        macs=kw_macs,  # type: ignore[arg-type]
        assembly="fmdconv.models.kernelwarehouse:ASSEMBLY",
    ),
    *(MethodInfo(name, name.upper(), nn.Conv2d, attention=name) for name in FEATURE_ATTENTIONS),
)

_METHODS: dict[str, MethodInfo] = {info.name: info for info in BUILT_IN}


def register_method(info: MethodInfo) -> MethodInfo:
    """Add a method at run time (a name already taken is a ValueError); returns ``info``."""
    if not isinstance(info, MethodInfo):
        raise ValueError(f"register_method takes a MethodInfo, got {type(info).__name__}")
    if info.name in _METHODS:
        raise ValueError(f"a method named {info.name!r} exists already")
    _METHODS[info.name] = info
    return info


def unregister_method(name: str) -> None:
    """Remove a method added with :func:`register_method` (the built-in ones stay)."""
    if name in {info.name for info in BUILT_IN}:
        raise ValueError(f"{name!r} is a built-in method and stays registered")
    if _METHODS.pop(name, None) is None:
        raise ValueError(f"no registered method named {name!r}")


def method_names() -> tuple[str, ...]:
    """Every method: the convolutions, then the feature attentions (and any registered later)."""
    return tuple(_METHODS)


def conv_names() -> tuple[str, ...]:
    """The methods that are convolutions (``conv=``): every method but the feature attentions."""
    return tuple(name for name, info in _METHODS.items() if info.attention is None)


def method_info(name: str) -> MethodInfo:
    """The record of method ``name``; a ValueError lists the accepted names."""
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; accepted: {', '.join(_METHODS)}") from None


def conv_info(name: str) -> MethodInfo:
    """The record of convolution ``name`` (not a feature attention); a ValueError lists the accepted."""
    info = _METHODS.get(name) if isinstance(name, str) else None
    if info is None or info.attention is not None:
        raise ValueError(f"unknown conv kind {name!r}; accepted: {', '.join(conv_names())}")
    return info


def records() -> Iterator[MethodInfo]:
    """Every registered record, in :func:`method_names` order."""
    return iter(tuple(_METHODS.values()))


def dynamic_layer_types() -> tuple[type[nn.Module], ...]:
    """The layer classes of the dynamic methods (for ``isinstance`` checks), each once."""
    return tuple(dict.fromkeys(info.layer for info in _METHODS.values() if info.dynamic))


def record_of_layer(layer: nn.Module) -> MethodInfo | None:
    """The record whose layer class ``layer`` is an instance of (its own class's first), or None."""
    exact = [info for info in _METHODS.values() if info.dynamic and type(layer) is info.layer]
    if exact:
        return exact[0]
    return next((info for info in _METHODS.values() if info.dynamic and isinstance(layer, info.layer)), None)


# Snapshots of the built-in names (the functions above also see methods registered later).
CONV_KINDS: tuple[str, ...] = conv_names()
# The kinds that mix n kernels (DynamicConv2d): every dynamic kind but DCD, FDConv and KernelWarehouse.
KERNEL_MIXTURES: tuple[str, ...] = tuple(info.name for info in BUILT_IN if info.kernel_mixture)
METHODS: tuple[str, ...] = method_names()
