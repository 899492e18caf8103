"""Argument normalisation shared by the layers (nn.Conv2d's conventions)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

import torch.nn.functional as F
from torch import Tensor, nn

from fmdconv.layers.conv_primitives import ConvGeometry

IntPair: TypeAlias = int | tuple[int, int]
PaddingArg: TypeAlias = int | tuple[int, int] | str

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS = ("same", "valid")

Function = TypeVar("Function", bound=Callable[..., Any])


def renamed_keyword(old: str, new: str) -> Callable[[Function], Function]:
    """Let ``function`` still take keyword ``old`` for ``new``, with a DeprecationWarning."""

    def decorate(function: Function) -> Function:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{function.__qualname__}: pass {new}= only ({old}= is its old name)")
                warnings.warn(
                    f"{function.__qualname__}: the keyword {old}= is deprecated, use {new}=",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def is_int_at_least(value: object, minimum: int) -> bool:
    """Whether ``value`` is an int of at least ``minimum`` (``True`` is an int to Python, not a count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_number(value: object) -> bool:
    """An int or float that is not a bool (``True`` is an int to Python, not a setting)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(owner: str, argument: str, value: object, minimum: int = 1) -> int:
    """``value`` itself, or a ValueError saying ``owner: argument must be an int >= minimum``."""
    if not is_int_at_least(value, minimum):
        raise ValueError(f"{owner}: {argument} must be an int >= {minimum}, got {value!r}")
    return value  # type: ignore[return-value]


def to_pair(value: IntPair, name: str, minimum: int = 1) -> tuple[int, int]:
    """Return ``value`` as a pair of ints, checking each is at least ``minimum``."""
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, tuple | list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def resolve_padding(
    padding: PaddingArg,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[tuple[int, int] | str, tuple[int, int, int, int]]:
    """Normalise ``padding`` as nn.Conv2d does.

    Returns the attribute value (a pair, or the string ``'same'``/``'valid'``) and the explicit
    amounts ``(left, right, top, bottom)`` that ``F.pad`` takes. ``'same'`` puts the odd pixel on the
    right/bottom, as PyTorch does.
    """
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise ValueError(f"padding must be an int, a pair of ints, 'same' or 'valid', got {padding!r}")
        if padding == "valid":
            return padding, (0, 0, 0, 0)
        if stride != (1, 1):
            raise ValueError(f"padding='same' is not supported for strided convolutions (stride={stride})")
        amounts = []
        for k, d in ((kernel_size[1], dilation[1]), (kernel_size[0], dilation[0])):
            total = d * (k - 1)
            amounts += [total // 2, total - total // 2]
        return padding, (amounts[0], amounts[1], amounts[2], amounts[3])
    pair = to_pair(padding, "padding", minimum=0)
    return pair, (pair[1], pair[1], pair[0], pair[0])


def set_conv_arguments(
    layer: nn.Module,
    kernel_size: IntPair,
    stride: IntPair,
    padding: PaddingArg,
    dilation: IntPair,
    groups: int,
    padding_mode: str,
) -> tuple[tuple[int, int, int, int], ConvGeometry]:
    """Check nn.Conv2d's geometry arguments and set them on ``layer`` as nn.Conv2d names them.

    Sets ``kernel_size``, ``stride``, ``dilation`` (pairs), ``padding`` (a pair, or ``'same'`` /
    ``'valid'``), ``groups`` and ``padding_mode``; returns the explicit padding ``(left, right, top,
    bottom)`` and the :class:`ConvGeometry` the formulations take.
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(
            f"{type(layer).__name__}: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}"
        )
    layer.kernel_size = to_pair(kernel_size, "kernel_size")
    layer.stride = to_pair(stride, "stride")
    layer.dilation = to_pair(dilation, "dilation")
    layer.padding, explicit_padding = resolve_padding(
        padding, layer.kernel_size, layer.stride, layer.dilation
    )
    layer.groups = groups
    layer.padding_mode = padding_mode
    geometry = ConvGeometry.of_conv(
        layer.kernel_size, layer.stride, layer.dilation, groups, padding_mode, explicit_padding
    )
    return explicit_padding, geometry


def batch_norm(norm: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """``norm(x)``, but with the running statistics (left unchanged) where a training batch holds one
    value per channel, whose batch statistics are undefined (an attention path at batch 1)."""
    if norm.training and x.numel() == x.shape[1]:
        return F.batch_norm(
            x, norm.running_mean, norm.running_var, norm.weight, norm.bias, training=False, eps=norm.eps
        )
    return norm(x)


def kernel_elements(layer: nn.Module) -> int:
    """Elements of one kernel of a convolution-like ``layer``, ``C_out * C_in / groups * kh * kw``."""
    kh, kw = layer.kernel_size
    return layer.out_channels * (layer.in_channels // layer.groups) * kh * kw
