"""fmdconv: dynamic convolution for PyTorch (FMDConv, ODConv, DyConv, CondConv).

The layers are imported eagerly; the subpackages (``models``, ``data``, ``train``, ``experiments``,
``metrics``, ``profiling``, ``explain``, ``viz``, ``compat``) load on first access, so ``import
fmdconv`` stays light (no matplotlib, no TensorBoard).
"""

from __future__ import annotations

import importlib
from typing import Any

from fmdconv.layers import *  # noqa: F403
from fmdconv.layers import __all__ as _layers_all

__version__ = "0.1.0"

_SUBPACKAGES = (
    "models",
    "data",
    "train",
    "experiments",
    "metrics",
    "profiling",
    "explain",
    "viz",
    "compat",
)
# Public functions that live in a subpackage: name -> module.
_LAZY_NAMES: dict[str, str] = {
    "create_model": "fmdconv.models",
    "list_models": "fmdconv.models",
    "convert": "fmdconv.models",
    "profile": "fmdconv.profiling",
    "measure_speed": "fmdconv.profiling",
}

__all__ = [*_layers_all, *_SUBPACKAGES, *_LAZY_NAMES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
