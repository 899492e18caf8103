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
per-backbone rules, :func:`dcd_layer_options`.

FDConv (Chen et al., CVPR 2025) follows the authors' ResNet and layer: every convolution of the
residual blocks (strided ones included) whose ``min(C_in, C_out) > 16``, kernel 1x1 or 3x3 and
``groups == 1`` (:func:`fd_replaces`); the stem, the downsample convolutions and the others stay
static. Their code has no MobileNetV2 (its depthwise convolutions do not fit their layer).

CondConv replaces what ODConv does, except on MobileNetV2, where it follows the CondConv paper (whose
counts the ODConv paper reports for CondConv 8x): experts only in the final 6 inverted residual
blocks and in the classifier, and one routing function per block shared by its convolutions
(``shared_routing``). :data:`MODEL_LAYOUTS` holds such per-backbone exceptions.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from fmdconv.layers import CONV_KINDS, DynamicLinear, SharedRouting, create_conv2d
from fmdconv.models.kernelwarehouse import KWSlot

Role = Literal["stem", "block", "late_block", "downsample", "head", "classifier"]
ROLES: tuple[str, ...] = ("stem", "block", "late_block", "downsample", "head", "classifier")

# Per-kernel biases in the backbones where they differ from the method's default: DyConv's backbones
# (the DyConv code's ResNet, the ODConv paper's DyConv rows) and CondConv's (the CondConv code, the
# ODConv paper's CondConv rows) have none, the convolutions being followed by BatchNorm. FMDConv's
# authors keep theirs (its default); ODConv has none by default.
BACKBONE_BIAS: dict[str, bool] = {"cond": False, "dy": False}

REPLACED_ROLES: dict[str, frozenset[str]] = {
    "static": frozenset(),
    "cond": frozenset({"block", "late_block", "head"}),
    "dy": frozenset({"block", "late_block", "downsample", "head"}),
    "od": frozenset({"block", "late_block", "head"}),
    "fmd": frozenset({"block", "late_block", "head"}),
    "dcd": frozenset({"block", "late_block", "classifier"}),
    "fd": frozenset({"block"}),
    # KernelWarehouse: the block convolutions and the stride-2 downsamples (a stride-1 one stays
    # static, models/kernelwarehouse.py); its MobileNetV2 layout adds the stem (MODEL_LAYOUTS).
    "kw": frozenset({"block", "late_block", "downsample", "head"}),
}

# FDConv's replacement rule (the authors' layer falls back to a static convolution otherwise).
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


# DCD's classifier (``DYCls`` in the DCD code): latent 32, attention width 32, with a bias.
DCD_CLASSIFIER_OPTIONS: dict[str, int] = {"latent_dim": 32, "squeeze_channels": 32}
# ResNet-18/34's DCD convolutions pool the input to 2x2 for their attention (``conv_basic_dy``).
DCD_POOL_SIZE: dict[str, int] = {"resnet18": 2, "resnet34": 2}


def dcd_mobilenet_v2_latent(in_channels: int, out_channels: int) -> tuple[int, int]:
    """(latent L, pool size) of a DCD 1x1 convolution of MobileNetV2, as the DCD code's ``DYModule``.

    Expansions (``in < out``) pool to 2x2 and start from a reduction of 8, projections pool to 1x1
    and start from 2; ``L = min(in * pool**2, out) // reduction``, the reduction doubling while
    ``L**2 > 2 * in * pool**2``; L is at least 4.
    """
    pool, reduction = (2, 8) if in_channels < out_channels else (1, 2)
    pooled = in_channels * pool * pool
    latent = min(pooled, out_channels) // reduction
    while latent * latent > 2 * pooled:
        reduction *= 2
        latent = min(pooled, out_channels) // reduction
    return max(latent, 4), pool


def dcd_layer_options(model: str | None, in_channels: int, out_channels: int) -> dict[str, int]:
    """The DCD code's per-layer options for a convolution of ``model``: latent size and pooling."""
    if model == "mobilenet_v2":
        latent, pool = dcd_mobilenet_v2_latent(in_channels, out_channels)
        return {"latent_dim": latent, "pool_size": pool}
    return {"pool_size": DCD_POOL_SIZE.get(model or "", 1)}


# (model, conv) -> (replaced roles, shared routing) where a method's paper lays a backbone out its own way.
MODEL_LAYOUTS: dict[tuple[str, str], tuple[frozenset[str], bool]] = {
    ("mobilenet_v2", "cond"): (frozenset({"late_block", "classifier"}), True),
    ("mobilenet_v2", "kw"): (frozenset({"stem", "block", "late_block", "head"}), False),
}


class ConvFactory:
    """Builds each convolution of a backbone: dynamic of kind ``conv`` where the method replaces it.

    Args:
        conv: one of ``static``, ``cond``, ``dy``, ``od``, ``fmd``, ``dcd``, ``fd``.
        kernel_num: number of kernels n of the dynamic layers (DCD mixes no kernels: unused).
        replaced_roles: roles to make dynamic (default: the method's, :data:`REPLACED_ROLES`).
        bias: per-kernel biases of the dynamic layers (default: :data:`BACKBONE_BIAS`, else the
            method's default).
        model: the backbone's name, whose layout for the method (:data:`MODEL_LAYOUTS`) gives the
            defaults of ``replaced_roles`` and ``shared_routing``.
        shared_routing: one routing function per block, shared by the block's dynamic convolutions
            (CondConv only; backbones that support it ask :meth:`block_routing`).
        options: further options of the dynamic layers (``reduction``, ``hidden_ratio``,
            ``gate_temperature``, ``attention_init``, ...); rejected for ``conv="static"``. The
            block routings (:meth:`block_routing`) take ``attention_init`` too.
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
        if conv not in CONV_KINDS:
            raise ValueError(f"unknown conv {conv!r}; accepted: {', '.join(CONV_KINDS)}")
        if conv == "static" and (options or bias is not None or shared_routing is not None):
            given = [*options, *(["bias"] if bias is not None else [])]
            given += ["shared_routing"] if shared_routing is not None else []
            raise ValueError(f"conv='static' takes no dynamic options, got {sorted(given)}")
        layout_roles, layout_routing = MODEL_LAYOUTS.get((model or "", conv), (REPLACED_ROLES[conv], False))
        shared_routing = layout_routing if shared_routing is None else shared_routing
        if not isinstance(shared_routing, bool):
            raise ValueError(f"shared_routing must be True, False or None, got {shared_routing!r}")
        if shared_routing and conv != "cond":
            raise ValueError(f"shared_routing is CondConv's (conv='cond'), got conv={conv!r}")
        roles = layout_roles if replaced_roles is None else frozenset(replaced_roles)
        unknown = roles - set(ROLES)
        if unknown:
            raise ValueError(f"unknown replaced_roles {sorted(unknown)}; accepted: {', '.join(ROLES)}")
        self.conv = conv
        self.kernel_num = kernel_num
        self.replaced_roles = roles if conv != "static" else frozenset()
        self.bias = BACKBONE_BIAS.get(conv) if bias is None else bias
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
        ``expanded``: False in a MobileNetV2 block without an expansion, which DCD keeps static.
        """
        padding = (kernel_size - 1) // 2
        if self.conv == "kw" and self.is_dynamic(role):
            # A place for a KernelWarehouse convolution; share_warehouses() fills it once the
            # whole backbone (and so every warehouse's size) is known.
            return KWSlot(in_channels, out_channels, kernel_size, stride, padding, groups)
        if self.conv == "dcd" and self.is_dynamic(role) and groups == 1 and expanded:
            options = dcd_layer_options(self.model, in_channels, out_channels) | self.options
            return create_conv2d(
                "dcd", in_channels, out_channels, kernel_size, stride, padding, bias=self.bias, **options
            )
        if (
            self.conv == "fd"
            and self.is_dynamic(role)
            and fd_replaces(in_channels, out_channels, kernel_size, groups)
        ):
            return create_conv2d(
                "fd",
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                bias=self.bias,
                kernel_num=self.kernel_num,
                **self.options,
            )
        if self.conv not in ("dcd", "fd", "kw") and self.is_dynamic(role):
            return create_conv2d(
                self.conv,
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                groups=groups,
                bias=self.bias,
                kernel_num=self.kernel_num,
                **({"shared_routing": True} if routed else {}),
                **self.options,
            )
        return create_conv2d(
            "static", in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
        )

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
        """
        if not self.is_dynamic("classifier"):
            return nn.Linear(in_features, out_features)
        if self.conv == "dcd":
            return DynamicLinear(in_features, out_features, kind="dcd", **DCD_CLASSIFIER_OPTIONS)
        return DynamicLinear(
            in_features,
            out_features,
            kind=self.conv,
            kernel_num=self.kernel_num,
            **({"shared_routing": True} if routed else {}),
            **self.options,
        )
