"""Build any convolution of the family by name."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from fmdconv.layers.dcd import DCDConv2d
from fmdconv.layers.dynamic_conv import DynamicConv2d
from fmdconv.layers.fdconv import FDConv2d
from fmdconv.layers.kernelwarehouse import KWConv2d
from fmdconv.layers.methods import CondConv2d, DyConv2d, FMDConv2d, ODConv2d

CONV_TYPES: dict[str, type[nn.Module]] = {
    "static": nn.Conv2d,
    "cond": CondConv2d,
    "dy": DyConv2d,
    "od": ODConv2d,
    "fmd": FMDConv2d,
    "dcd": DCDConv2d,
    "fd": FDConv2d,
    "kw": KWConv2d,
}
CONV_KINDS: tuple[str, ...] = tuple(CONV_TYPES)
# The kinds that mix n kernels (DynamicConv2d): every dynamic kind but DCD, FDConv and KernelWarehouse.
KERNEL_MIXTURES: tuple[str, ...] = tuple(k for k, cls in CONV_TYPES.items() if issubclass(cls, DynamicConv2d))


def conv_type(kind: str) -> type[nn.Module]:
    """The class for ``kind``; a ValueError lists the accepted kinds."""
    try:
        return CONV_TYPES[kind]
    except KeyError:
        raise ValueError(f"unknown conv kind {kind!r}; accepted: {', '.join(CONV_KINDS)}") from None


def create_conv2d(
    kind: str,
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    bias: bool | None = None,
    padding_mode: str = "zeros",
    device: Any = None,
    dtype: Any = None,
    **options: Any,
) -> nn.Module:
    """Build a convolution of ``kind`` (``static``, ``cond``, ``dy``, ``od``, ``fmd``, ``dcd``, ``fd``,
    ``kw``).

    The arguments are nn.Conv2d's; ``bias=None`` takes the method's default (True for ``static``).
    ``options`` are the dynamic layers' keyword options (``kernel_num``, ``reduction``, ...; DCD's
    ``latent_dim``, ``pool_size``, ``fc_squeeze``, ``squeeze_channels``; FDConv's, see
    :class:`~fmdconv.layers.FDConv2d`; KernelWarehouse's ``cell_num_ratio``, ``cell_in_ratio``,
    ``cell_out_ratio``, ``reduction``, ``warehouse``, ..., see :class:`~fmdconv.layers.KWConv2d`); a
    static convolution takes none.
    """
    cls = conv_type(kind)
    args = (in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
    common = {"padding_mode": padding_mode, "device": device, "dtype": dtype}
    if cls is nn.Conv2d:
        if options:
            raise ValueError(f"a static convolution takes no dynamic options, got {sorted(options)}")
        return cls(*args, bias=True if bias is None else bias, **common)
    if cls in (DCDConv2d, KWConv2d) and "kernel_num" in options:
        raise ValueError(f"a {kind} convolution mixes no kernels: kernel_num does not apply to it")
    accepted = method_options(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"a {kind} convolution ({cls.__name__}) has no option {', '.join(unknown)}; "
            f"its options: {', '.join(accepted)}"
        )
    return cls(*args, bias=bias, **common, **options)


_CONV2D_ARGUMENTS = frozenset(inspect.signature(nn.Conv2d).parameters)


def method_options(cls: type[nn.Module]) -> tuple[str, ...]:
    """The keyword options ``cls`` takes beyond nn.Conv2d's arguments, in its signature's order."""
    parameters = inspect.signature(cls).parameters.values()
    return tuple(
        p.name
        for p in parameters
        if p.name not in _CONV2D_ARGUMENTS
        and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )
