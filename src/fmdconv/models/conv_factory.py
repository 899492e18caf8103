"""Which convolutions of a backbone each method makes dynamic, and the factory that builds them.

Backbones label every convolution with a *role* and ask a :class:`ConvFactory` for it; the factory
builds a dynamic layer (through :func:`~fmdconv.layers.create_conv2d`) for the roles the method
replaces and a static ``nn.Conv2d`` for the others. The rules follow the papers and the authors'
code (docs/design.md, section 1):

``stem``
    The first convolution. Never replaced (ODConv, FMDConv and DyConv code all keep it static).
``block``
    Every convolution inside a residual block: ResNet ``conv1/2/3``, the MobileNetV2
    inverted-residual convolutions of all but the final 6 blocks. Replaced by every dynamic method
    (DCD: see below).
``late_block``
    The convolutions of MobileNetV2's final 6 inverted residual blocks (``features.12-17``).
    Replaced by every dynamic method.
``downsample``
    ResNet's 1x1 projection shortcuts. Replaced only by DyConv, as in the DyConv baseline of the
    ODConv paper (its 45.47M for ResNet-18 4x counts them).
``head``
    MobileNetV2's last 1x1 convolution (320 -> 1280). Replaced by every dynamic method, as in the
    ODConv code.
``classifier``
    The final fully connected layer; made dynamic (a :class:`~fmdconv.layers.DynamicLinear`) by
    CondConv's MobileNetV2 layout and by DCD.

DCD (Li et al., ICLR 2021) follows the DCD code: every full convolution of the residual blocks
(MobileNetV2: the 1x1 expansions and projections of the blocks with an expansion; the depthwise
convolutions and the first block, ``features.1``, which has no expansion, stay static), and the
classifier; not the stem, ResNet's downsample convolutions or
MobileNetV2's last 1x1 convolution. Its per-layer sizes (latent L, pooling) follow the DCD code's
per-backbone rules, :func:`~fmdconv.layers.dcd.dcd_layer_options`.

FDConv (Chen et al., CVPR 2025) follows the authors' ResNet and layer: every convolution of the
residual blocks (strided ones included) whose ``min(C_in, C_out) > 16``, kernel 1x1 or 3x3 and
``groups == 1`` (:func:`~fmdconv.layers.fdconv_method.fd_replaces`); the stem, the downsample
convolutions and the others stay static. Their code has no MobileNetV2 (its depthwise convolutions
do not fit their layer).

CondConv replaces what ODConv does, except on MobileNetV2, where it follows the CondConv paper (whose
counts the ODConv paper reports for CondConv 8x): experts only in the final 6 inverted residual
blocks and in the classifier, and one routing function per block shared by its convolutions
(``shared_routing``).

All of this is read from each method's record (:class:`~fmdconv.layers.MethodInfo`: its roles, its
per-backbone layouts, its rule for one convolution and its per-layer options), so the factory has
no case for any method.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Mapping
from typing import Any, Literal

from torch import nn

from fmdconv.layers import ROLES, ConvSite, DynamicLinear, SharedRouting, conv_info, conv_names, create_conv2d
from fmdconv.layers.registry import MethodInfo, records

Role = Literal["stem", "block", "late_block", "downsample", "head", "classifier"]


class _ReplacedRoles(Mapping[str, frozenset[str]]):
    """Method name -> the roles it replaces by default, read from the records."""

    def __getitem__(self, conv: str) -> frozenset[str]:
        try:
            return conv_info(conv).replaced_roles
        except ValueError:
            raise KeyError(conv) from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(conv_names())

    def __len__(self) -> int:
        return len(conv_names())


# The roles each convolution method replaces by default (its record's ``replaced_roles``).
REPLACED_ROLES: Mapping[str, frozenset[str]] = _ReplacedRoles()


def backbone_assembly(info: MethodInfo) -> Any:
    """The backbone-level builder a method's record names (``assembly``), or None."""
    return None if info.assembly is None else pkgutil.resolve_name(info.assembly)


class ConvFactory:
    """Builds each convolution of a backbone: dynamic of kind ``conv`` where the method replaces it.

    Args:
        conv: a convolution kind, one of :func:`~fmdconv.layers.conv_names` (``static``, ``cond``,
            ``dy``, ``od``, ``fmd``, ``dcd``, ``fd``, ``kw``).
        kernel_num: number of kernels n of the dynamic layers (for the methods that take one).
        replaced_roles: roles to make dynamic (default: the method's layout of ``model``).
        bias: per-kernel biases of the dynamic layers (default: the record's ``backbone_bias``,
            else the method's default).
        model: the backbone's name, whose layout for the method (the record's ``layouts``) gives
            the defaults of ``replaced_roles`` and ``shared_routing``.
        shared_routing: one routing function per block, shared by the block's dynamic convolutions
            (methods whose record has ``shared_routing``, CondConv; backbones that support it ask
            :meth:`block_routing`).
        options: further options of the dynamic layers (``reduction``, ``hidden_ratio``,
            ``gate_temperature``, ``attention_init``, ...); rejected for ``conv="static"`` and for a
            method whose backbone-level builder makes its layers (``create_model`` passes those
            options to the builder). The block routings (:meth:`block_routing`) take
            ``attention_init`` too.
    """

    def __init__(
        self,
        conv: str,
        kernel_num: int = 4,
        replaced_roles: frozenset[str] | None = None,
        bias: bool | None = None,
        model: str | None = None,
        shared_routing: bool | None = None,
        **options: Any,
    ) -> None:
        if conv not in conv_names():
            raise ValueError(f"unknown conv {conv!r}; accepted: {', '.join(conv_names())}")
        info = conv_info(conv)
        if not info.dynamic and (options or bias is not None or shared_routing is not None):
            given = [*options, *(["bias"] if bias is not None else [])]
            given += ["shared_routing"] if shared_routing is not None else []
            raise ValueError(f"conv={conv!r} takes no dynamic options, got {sorted(given)}")
        self.assembly = backbone_assembly(info)
        if self.assembly is not None and options:
            raise ValueError(
                f"conv={conv!r} layers are made by its backbone builder, which takes "
                f"{', '.join(self.assembly.options)} through create_model; got {sorted(options)}"
            )
        layout = info.layout(model)
        shared_routing = layout.shared_routing if shared_routing is None else shared_routing
        if not isinstance(shared_routing, bool):
            raise ValueError(f"shared_routing must be True, False or None, got {shared_routing!r}")
        if shared_routing and not info.shared_routing:
            owners = ", ".join(f"{r.label}'s (conv={r.name!r})" for r in records() if r.shared_routing)
            raise ValueError(f"shared_routing is {owners}, got conv={conv!r}")
        roles = layout.replaced_roles if replaced_roles is None else frozenset(replaced_roles)
        unknown = roles - set(ROLES)
        if unknown:
            raise ValueError(f"unknown replaced_roles {sorted(unknown)}; accepted: {', '.join(ROLES)}")
        self.conv = conv
        self.info = info
        self.kernel_num = kernel_num
        self.replaced_roles = roles if info.dynamic else frozenset()
        self.bias = info.backbone_bias if bias is None else bias
        self.shared_routing = shared_routing
        self.model = model
        self.options = options

    def __call__(
        self,
        role: Role,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        routed: bool = False,
        expanded: bool = True,
    ) -> nn.Module:
        """A 'same'-padded convolution for ``role``: dynamic where the method replaces it, else static.

        ``routed``: the block has a :meth:`block_routing`, whose weights the convolution takes.
        ``expanded``: False in a MobileNetV2 block without an expansion (which DCD keeps static).
        """
        padding = (kernel_size - 1) // 2
        site = ConvSite(self.model, in_channels, out_channels, kernel_size, groups, expanded)
        if not (self.is_dynamic(role) and self.info.replaces_site(site)):
            return create_conv2d(
                "static", in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
            )
        if self.assembly is not None:
            # A place for a layer whose shared parameters are sized once the whole backbone is known.
            return self.assembly.placeholder(in_channels, out_channels, kernel_size, stride, padding, groups)
        options = self.info.site_options(site) if self.info.site_options is not None else {}
        return create_conv2d(
            self.conv,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            groups=groups,
            bias=self.bias,
            **self._counts(routed),
            **{**options, **self.options},
        )

    def _counts(self, routed: bool) -> dict[str, Any]:
        """``kernel_num`` for the methods that take one, ``shared_routing`` for a routed layer."""
        counts: dict[str, Any] = {"kernel_num": self.kernel_num} if self.info.takes("kernel_num") else {}
        return counts | ({"shared_routing": True} if routed else {})

    def is_dynamic(self, role: Role) -> bool:
        """Whether the method makes convolutions (or the classifier) of ``role`` dynamic."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; accepted: {', '.join(ROLES)}")
        return role in self.replaced_roles

    def block_routing(self, role: Role, in_channels: int) -> SharedRouting | None:
        """The routing function shared by a block's convolutions of ``role``, or None (each its own)."""
        if not (self.shared_routing and self.is_dynamic(role)):
            return None
        return SharedRouting(
            in_channels, self.kernel_num, attention_init=self.options.get("attention_init", "zero")
        )

    def linear(self, in_features: int, out_features: int, routed: bool = False) -> nn.Module:
        """The classifier: a :class:`~fmdconv.layers.DynamicLinear` where the method replaces it.

        It always has biases (``bias`` concerns the convolutions, which BatchNorm follows).
        ``routed``: it takes the routing weights of a block (``shared_routing``) instead of its own.
        A method whose record has ``classifier_options`` (DCD) builds it with those instead of the
        convolutions' options.
        """
        if not self.is_dynamic("classifier"):
            return nn.Linear(in_features, out_features)
        fixed = self.info.classifier_options
        options = dict(fixed) if fixed is not None else {**self._counts(routed), **self.options}
        return DynamicLinear(in_features, out_features, conv=self.conv, **options)
