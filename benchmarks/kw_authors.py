"""Import the KernelWarehouse authors' code (OSVAI/KernelWarehouse) from a checkout, for parity runs.

Their ImageNet models import ``timm`` (0.3.2) only for ``DropPath``, ``trunc_normal_`` and
``register_model``; where timm is not installed, this module puts minimal stand-ins for those in
``sys.modules`` (drop
path is off in every model built here). Nothing of their code is copied into fmdconv: the scripts
that use this (``kw_reference.py``, ``bench_kernelwarehouse.py``) take the checkout's path.

Export a checkout from the bare mirror with
``mkdir -p /tmp/authors/kw && git -C <mirror> archive HEAD | tar -x -C /tmp/authors/kw``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from torch import nn

# The authors' per-model settings (their configs/*.json): ratio -> constructor options.
RESNET_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "resnet18": {
        "1/4": {"cell_num_ratio": 0.25, "cell_inplane_ratio": 0.5, "cell_outplane_ratio": 0.5},
        "1/2": {"cell_num_ratio": 0.5, "cell_inplane_ratio": 0.5, "cell_outplane_ratio": 0.5},
        "1": {"cell_num_ratio": 1},
        "2": {"cell_num_ratio": 2},
        "4": {"cell_num_ratio": 4},
    },
    "resnet50": {
        "1/2": {
            "cell_num_ratio": 0.5,
            "cell_inplane_ratio": 0.5,
            "cell_outplane_ratio": 0.5,
            "nonlocal_basis_ratio": 0.0625,
        },
        "1": {"cell_num_ratio": 1},
        "4": {"cell_num_ratio": 4},
    },
}
MOBILENET_CONFIGS: dict[str, dict[str, Any]] = {
    "1": {"cell_num_ratio": 1, "sharing_range": ["layer", "pwconv"]},
    "4": {"cell_num_ratio": 4, "sharing_range": ["layer"]},
}
# Their MobileNetV2 1/2x is its own network (models/kw1d2x_mobilenetv2.py), its settings built in.
MOBILENET_HALF = "1/2"


def _stub_timm() -> None:
    try:
        importlib.import_module("timm")
        return
    except ImportError:
        pass
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")

    class DropPath(nn.Identity):
        def __init__(self, drop_prob: float = 0.0) -> None:
            super().__init__()

    layers.DropPath = DropPath  # type: ignore[attr-defined]
    layers.trunc_normal_ = nn.init.trunc_normal_  # type: ignore[attr-defined]
    registry.register_model = lambda fn: fn  # type: ignore[attr-defined]
    models.layers, models.registry = layers, registry  # type: ignore[attr-defined]
    timm.models = models  # type: ignore[attr-defined]
    sys.modules.update(
        {"timm": timm, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry}
    )


def load(path: str) -> types.SimpleNamespace:
    """The authors' ``modules.kernel_warehouse``, ``models.kw_resnet``, ``models.kw_mobilenetv2`` and
    ``models.kw1d2x_mobilenetv2``."""
    _stub_timm()
    if path not in sys.path:
        sys.path.insert(0, path)
    return types.SimpleNamespace(
        kernel_warehouse=importlib.import_module("modules.kernel_warehouse"),
        kw_resnet=importlib.import_module("models.kw_resnet"),
        kw_mobilenetv2=importlib.import_module("models.kw_mobilenetv2"),
        kw1d2x_mobilenetv2=importlib.import_module("models.kw1d2x_mobilenetv2"),
    )


def authors_model(code: types.SimpleNamespace, name: str, ratio: str, width: float = 1.0) -> nn.Module:
    """The authors' ``kw_resnet18``/``kw_resnet50``/``kw_mobilenetv2``/``kw1d2x_mobilenetv2`` at
    ``ratio`` ("1/4" ... "4")."""
    if name in RESNET_CONFIGS:
        build = code.kw_resnet.kw_resnet18 if name == "resnet18" else code.kw_resnet.kw_resnet50
        return build(dropout=0.0, **RESNET_CONFIGS[name][ratio])
    if ratio == MOBILENET_HALF:
        return code.kw1d2x_mobilenetv2.kw1d2x_mobilenetv2(width_mult=width, dropout=0.0)
    return code.kw_mobilenetv2.kw_mobilenetv2(width_mult=width, **MOBILENET_CONFIGS[ratio])


def set_temperature(model: nn.Module, tau: float) -> None:
    """The authors' ``net_update_temperature`` for any module that holds their layers."""
    for module in model.modules():
        if hasattr(module, "update_temperature"):
            module.update_temperature(tau)
