"""Build any convolution of the family by name: :func:`create_conv2d`."""

from __future__ import annotations

from typing import Any

from torch import nn

from fmdconv.layers.helpers import renamed_keyword
from fmdconv.layers.registry import conv_info


def conv_type(conv: str) -> type[nn.Module]:
    """The layer class of convolution ``conv``; a ValueError lists the accepted kinds."""
    return conv_info(conv).layer


@renamed_keyword("kind", "conv")
def create_conv2d(
    conv: str,
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
    """Build a convolution of kind ``conv`` (``static``, ``cond``, ``dy``, ``od``, ``fmd``, ``dcd``,
    ``fd``, ``kw``; :func:`~fmdconv.layers.conv_names`). ``kind=`` is the deprecated name of ``conv``.

    The arguments are nn.Conv2d's; ``bias=None`` takes the method's default (True for ``static``).
    ``options`` are the dynamic layers' keyword options (``kernel_num``, ``reduction``, ...; DCD's
    ``latent_dim``, ``pool_size``, ``fc_squeeze``, ``squeeze_channels``; FDConv's, see
    :class:`~fmdconv.layers.FDConv2d`; KernelWarehouse's ``cell_num_ratio``, ``cell_in_ratio``,
    ``cell_out_ratio``, ``reduction``, ``warehouse``, ..., see :class:`~fmdconv.layers.KWConv2d`); a
    static convolution takes none. ``method_info(conv).layer_options`` lists a kind's options.
    """
    info = conv_info(conv)
    args = (in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
    common = {"padding_mode": padding_mode, "device": device, "dtype": dtype}
    if not info.dynamic:
        if options:
            raise ValueError(f"a static convolution takes no dynamic options, got {sorted(options)}")
        return nn.Conv2d(*args, bias=True if bias is None else bias, **common)
    if "kernel_num" in options and not info.takes("kernel_num"):
        raise ValueError(f"a {conv} convolution mixes no kernels: kernel_num does not apply to it")
    unknown = sorted(set(options) - set(info.layer_options))
    if unknown:
        raise ValueError(
            f"a {conv} convolution ({info.layer.__name__}) has no option {', '.join(unknown)}; "
            f"its options: {', '.join(info.layer_options)}"
        )
    return info.layer(*args, bias=bias, **common, **options)
