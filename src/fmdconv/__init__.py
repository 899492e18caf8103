"""fmdconv: dynamic convolution for PyTorch (FMDConv, ODConv, DyConv, CondConv)."""

from fmdconv.layers import *  # noqa: F403
from fmdconv.layers import __all__ as _layers_all

__version__ = "0.1.0"
__all__ = [*_layers_all]
