"""Which convolutions of a backbone each method makes dynamic, and the factory that builds them.

Backbones label every convolution with a *role* and ask a :class:`ConvFactory` for it; the factory
builds a dynamic layer (through :func:`~fmdconv.layers.create_conv2d`) for the roles the method
replaces and a static ``nn.Conv2d`` for the others. The rules follow the papers and the authors'
code (SPEC section 1):

``stem``
    The first convolution. Never replaced (ODConv, FMDConv and DyConv code all keep it static).
``block``
    Every convolution inside a residual block: ResNet ``conv1/2/3``, all MobileNetV2
    inverted-residual convolutions. Replaced by every dynamic method.
``downsample``
    ResNet's 1x1 projection shortcuts. Replaced only by DyConv, as in the DyConv baseline of the
    ODConv paper (its 45.47M for ResNet-18 4x counts them).
``head``
    MobileNetV2's last 1x1 convolution (320 -> 1280). Replaced by every dynamic method, as in the
    ODConv code.

CondConv replaces what ODConv does. The CondConv paper's own MobileNetV2 (used for the ODConv paper's
CondConv rows) has experts only in the final 6 blocks and the classifier, with one routing function
shared by the convolutions of a block; layers here compute their own routing, so that layout is not
offered (``docs/models.md`` gives the exact count it would have).
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from fmdconv.layers import CONV_KINDS, create_conv2d

Role = Literal["stem", "block", "downsample", "head"]
ROLES: tuple[str, ...] = ("stem", "block", "downsample", "head")

# Per-kernel biases in the backbones where they differ from the method's default: DyConv's backbones
# (the DyConv code's ResNet, the ODConv paper's DyConv rows) have none, the convolutions being followed
# by BatchNorm. FMDConv's authors keep theirs (its default); ODConv has none by default.
BACKBONE_BIAS: dict[str, bool] = {"dy": False}

REPLACED_ROLES: dict[str, frozenset[str]] = {
    "static": frozenset(),
    "cond": frozenset({"block", "head"}),
    "dy": frozenset({"block", "downsample", "head"}),
    "od": frozenset({"block", "head"}),
    "fmd": frozenset({"block", "head"}),
}


class ConvFactory:
    """Builds each convolution of a backbone: dynamic of kind ``conv`` where the method replaces it.

    Args:
        conv: one of ``static``, ``cond``, ``dy``, ``od``, ``fmd``.
        kernel_num: number of kernels n of the dynamic layers.
        replaced_roles: roles to make dynamic (default: the method's, :data:`REPLACED_ROLES`).
        bias: per-kernel biases of the dynamic layers (default: :data:`BACKBONE_BIAS`, else the
            method's default).
        options: further options of the dynamic layers (``reduction``, ``hidden_ratio``,
            ``gate_temperature``, ...); rejected for ``conv="static"``.
    """

    def __init__(
        self,
        conv: str,
        kernel_num: int = 4,
        replaced_roles: frozenset[str] | None = None,
        bias: bool | None = None,
        **options: Any,
    ) -> None:
        if conv not in CONV_KINDS:
            raise ValueError(f"unknown conv {conv!r}; accepted: {', '.join(CONV_KINDS)}")
        if conv == "static" and (options or bias is not None):
            given = sorted([*options, *(["bias"] if bias is not None else [])])
            raise ValueError(f"conv='static' takes no dynamic options, got {given}")
        roles = REPLACED_ROLES[conv] if replaced_roles is None else frozenset(replaced_roles)
        unknown = roles - set(ROLES)
        if unknown:
            raise ValueError(f"unknown replaced_roles {sorted(unknown)}; accepted: {', '.join(ROLES)}")
        self.conv = conv
        self.kernel_num = kernel_num
        self.replaced_roles = roles if conv != "static" else frozenset()
        self.bias = BACKBONE_BIAS.get(conv) if bias is None else bias
        self.options = options

    def __call__(
        self,
        role: Role,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
    ) -> nn.Module:
        """A 'same'-padded convolution for ``role``: dynamic where the method replaces it, else static."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; accepted: {', '.join(ROLES)}")
        padding = (kernel_size - 1) // 2
        if role in self.replaced_roles:
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
                **self.options,
            )
        return create_conv2d(
            "static", in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
        )
