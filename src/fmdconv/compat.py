"""Convert state dicts between the authors' code and fmdconv (docs/design.md, section 7).

The ODConv authors (Li, Zhou, Yao, ICLR 2022; github.com/OSVAI/ODConv) publish ImageNet checkpoints
of their ResNets and MobileNetV2s; the FMDConv code (Zhang et al., KBS 2025) and the most used public
DyConv code (Chen et al., CVPR 2020) save the same kind of state dicts. Their backbones share
torchvision's module names, as do fmdconv's, so only the keys *inside* each dynamic layer differ:

============================== ======================================= ==============================
authors' key (layer ``P``)       shape                                   fmdconv key
============================== ======================================= ==============================
``P.weight``, ``P.bias``         (n, C_out, C_in/g, k, k), (n, C_out)     unchanged
``P.attention.fc.weight``        (d, C_in, 1, 1)                          ``P.gate.fc.weight`` (d, C_in)
``P.attention.bn.*``             BatchNorm of size d                      ``P.gate.bn.*``
``P.attention.channel_fc.*``     (C_in, d, 1, 1), (C_in,)                 ``P.gate.heads.input.*``
``P.attention.filter_fc.*``      (C_out, d, 1, 1)                         ``P.gate.heads.output.*``
``P.attention.spatial_fc.*``     (k·k, d, 1, 1)                           ``P.gate.heads.spatial.*``
``P.attention.kernel_fc.*``      (n, d, 1, 1)  (ODConv)                   ``P.gate.heads.kernel.*``
``P.attention2.fc1.weight``      (h, C_in, 1, 1)  (FMDConv)               ``P.kernel_path.fc1.weight``
``P.attention2.fc2.*``           (n, h, 1, 1)  (FMDConv)                  ``P.kernel_path.fc2.*``
``P.attention.fc1.weight``       (h, C_in, 1, 1)  (DyConv)                ``P.kernel_path.fc1.weight``
``P.attention.fc2.*``            (n, h, 1, 1)  (DyConv)                   ``P.kernel_path.fc2.*``
(not stored)                                                              ``P.gate_temperature``,
                                                                          ``P.kernel_temperature``
============================== ======================================= ==============================

The authors' layers keep their temperatures as plain attributes, so their checkpoints do not hold
them: converting to fmdconv adds the temperature buffers with the values the authors' code had at the
end of training (:data:`DEFAULT_TEMPERATURES`: 1 for a finished ODConv or DyConv model; gate 1 and
kernel 34 for the released FMDConv code, whose kernel temperature never moves). Converting back drops
them. With one kernel the authors' DyConv/FMDConv layers still hold a kernel-attention MLP (whose
softmax over a single logit is constantly 1) and their ODConv layers no kernel head; fmdconv's layers
follow them, so checkpoints with one kernel convert both ways and load strictly.
Keys outside dynamic layers pass through unchanged; a state dict of a single layer (keys
``weight``, ``attention.fc.weight``, ...) converts the same way.

KernelWarehouse (Li and Yao, ICML 2024; github.com/OSVAI/KernelWarehouse, ``source="kernelwarehouse"``)
keeps its cells in a model-level ``warehouse_manager``; fmdconv's attention modules have the
authors' names, so only the warehouses, the MobileNetV2 classifier and the temperature move:

================================== ============================== ==================================
authors' key                         shape                          fmdconv key
================================== ============================== ==================================
``warehouse_manager.weights.{i}``    (n, c_out, c_in, 1, 1)          ``warehouses.{i}.cells``
``warehouse_manager.weights.0``      (single layer)                  ``warehouse.cells``
``P.attention.{fc1,norm1,fc2,...}``  as fmdconv's                    unchanged
``classifier.{weight,bias}``         (MobileNetV2 1x, 4x)            ``classifier.1.{weight,bias}``
(not stored)                                                         ``P.kernel_temperature``
================================== ============================== ==================================

MobileNetV2 1/2x's classifier, the authors' ``KWLinear``, keeps its keys (``classifier.1.conv.*``,
its warehouse's cells 1-D as theirs). A single layer's authors' state dict is its own keys plus its
warehouse as ``warehouse_manager.weights.0``. The authors' layers keep tau as an attribute; a
converted model gets tau = 0 (the end of their schedule, a finished model) unless
``kernel_temperature`` says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import Tensor

SOURCES = ("odconv", "fmdconv", "dyconv", "kernelwarehouse")
DIRECTIONS = ("to_fmdconv", "to_authors")

# (gate temperature, kernel temperature) at the end of training with each authors' code; None: the
# layer has no such temperature.
DEFAULT_TEMPERATURES: dict[str, tuple[float | None, float]] = {
    "odconv": (1.0, 1.0),
    "fmdconv": (1.0, 34.0),
    "dyconv": (None, 1.0),
    "kernelwarehouse": (None, 0.0),  # tau, annealed from 1 to 0
}

# Sub-keys of one dynamic layer: authors' name -> fmdconv name, per source. ``weight``/``bias`` of
# the layer itself are identical in both layouts.
_TRUNK = {
    "attention.fc.weight": "gate.fc.weight",
    "attention.bn.weight": "gate.bn.weight",
    "attention.bn.bias": "gate.bn.bias",
    "attention.bn.running_mean": "gate.bn.running_mean",
    "attention.bn.running_var": "gate.bn.running_var",
    "attention.bn.num_batches_tracked": "gate.bn.num_batches_tracked",
    **{
        f"attention.{authors}_fc.{p}": f"gate.heads.{ours}.{p}"
        for authors, ours in (("channel", "input"), ("filter", "output"), ("spatial", "spatial"))
        for p in ("weight", "bias")
    },
}
_ODCONV_KERNEL = {f"attention.kernel_fc.{p}": f"gate.heads.kernel.{p}" for p in ("weight", "bias")}
_FMDCONV_KERNEL = {
    "attention2.fc1.weight": "kernel_path.fc1.weight",
    "attention2.fc2.weight": "kernel_path.fc2.weight",
    "attention2.fc2.bias": "kernel_path.fc2.bias",
}
_DYCONV_KERNEL = {
    "attention.fc1.weight": "kernel_path.fc1.weight",
    "attention.fc2.weight": "kernel_path.fc2.weight",
    "attention.fc2.bias": "kernel_path.fc2.bias",
}
LAYER_KEYS: dict[str, dict[str, str]] = {
    "odconv": {**_TRUNK, **_ODCONV_KERNEL},
    "fmdconv": {**_TRUNK, **_FMDCONV_KERNEL},
    "dyconv": dict(_DYCONV_KERNEL),
}
# The key that marks a dynamic layer in each layout (every such layer has it).
_AUTHORS_MARKER = {
    "odconv": "attention.fc.weight",
    "fmdconv": "attention.fc.weight",
    "dyconv": "attention.fc1.weight",
}
_FMDCONV_MARKER = {
    "odconv": "gate.fc.weight",
    "fmdconv": "gate.fc.weight",
    "dyconv": "kernel_temperature",
}
# Top-level sub-modules of a dynamic layer in each layout: a key under one of them must be mapped.
_AUTHORS_MODULES = ("attention.", "attention2.")
_FMDCONV_MODULES = ("gate.", "kernel_path.")
_TEMPERATURES = ("gate_temperature", "kernel_temperature")


def _layer_prefixes(keys: list[str], marker: str) -> list[str]:
    """Prefixes ``P`` (``""`` or ending in ``"."``) of the layers that have the key ``P + marker``."""
    return [key[: -len(marker)] for key in keys if key == marker or key.endswith("." + marker)]


def _is_linear_weight(sub_key: str) -> bool:
    """The attention layers' weights: 1x1 convolutions in the authors' code, linear layers here."""
    return sub_key.endswith(".weight") and not sub_key.startswith(("attention.bn.", "gate.bn."))


def _temperature_values(
    source: str, gate_temperature: float | None, kernel_temperature: float | None
) -> dict[str, float]:
    default_gate, default_kernel = DEFAULT_TEMPERATURES[source]
    if default_gate is None and gate_temperature is not None:
        raise ValueError(f"gate_temperature does not apply to source={source!r} (DyConv has no gate)")
    values = {"kernel_temperature": default_kernel if kernel_temperature is None else kernel_temperature}
    if default_gate is not None:
        values["gate_temperature"] = default_gate if gate_temperature is None else gate_temperature
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    return values


def convert_state_dict(
    state_dict: Mapping[str, Tensor],
    source: str,
    direction: str = "to_fmdconv",
    gate_temperature: float | None = None,
    kernel_temperature: float | None = None,
) -> dict[str, Tensor]:
    """Convert a state dict saved by the authors' code into fmdconv's layout, or back.

    Args:
        state_dict: a whole model's or a single layer's state dict.
        source: the authors' code: ``"odconv"``, ``"fmdconv"``, ``"dyconv"`` or ``"kernelwarehouse"``;
            or ``"fdconv"`` (:func:`convert_fdconv_state_dict`, which stores no temperatures).
        direction: ``"to_fmdconv"`` (load the authors' weights here) or ``"to_authors"``.
        gate_temperature, kernel_temperature: the temperatures to store in the converted layers
            (``to_fmdconv`` only); default: :data:`DEFAULT_TEMPERATURES` (KernelWarehouse: no gate,
            tau = 0). Set them to what the authors' model had when it was saved, to get the same
            outputs.

    Returns:
        A new dict (tensors are shared where no reshaping is needed). Load it with
        ``model.load_state_dict(..., strict=True)`` into the matching ``create_model`` model.

    Raises:
        ValueError: unknown source or direction, no dynamic layer found, or a key inside a dynamic
            layer that the source's layout does not have (for example an ODConv checkpoint converted
            with ``source="dyconv"``).
    """
    if source == FDCONV_SOURCE:
        if gate_temperature is not None or kernel_temperature is not None:
            raise ValueError(
                "gate_temperature/kernel_temperature do not apply to source='fdconv' (not stored)"
            )
        return convert_fdconv_state_dict(state_dict, direction)
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; accepted: {', '.join((*SOURCES, FDCONV_SOURCE))}")
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; accepted: {', '.join(DIRECTIONS)}")
    to_fmdconv = direction == "to_fmdconv"
    if not to_fmdconv and (gate_temperature is not None or kernel_temperature is not None):
        raise ValueError("gate_temperature/kernel_temperature apply to direction='to_fmdconv' only")
    if source == "kernelwarehouse":
        if gate_temperature is not None:
            raise ValueError("gate_temperature does not apply to source='kernelwarehouse' (it has no gate)")
        return _convert_kernelwarehouse(state_dict, to_fmdconv, kernel_temperature)

    mapping = LAYER_KEYS[source] if to_fmdconv else {v: k for k, v in LAYER_KEYS[source].items()}
    marker = (_AUTHORS_MARKER if to_fmdconv else _FMDCONV_MARKER)[source]
    layer_modules = _AUTHORS_MODULES if to_fmdconv else _FMDCONV_MODULES
    keys = list(state_dict)
    prefixes = _layer_prefixes(keys, marker)
    if not prefixes:
        layout = "the authors'" if to_fmdconv else "fmdconv's"
        raise ValueError(
            f"no {source} layer found in {layout} layout (no key ending in {marker!r}); "
            f"check source (accepted: {', '.join(SOURCES)}) and direction"
        )
    # Longest prefix first, so a key is attributed to its innermost dynamic layer.
    prefixes.sort(key=len, reverse=True)
    temperatures = _temperature_values(source, gate_temperature, kernel_temperature) if to_fmdconv else {}

    converted: dict[str, Tensor] = {}
    for key in keys:
        value = state_dict[key]
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        sub_key = None if prefix is None else key[len(prefix) :]
        if sub_key is None or not sub_key.startswith(layer_modules + _TEMPERATURES):
            converted[key] = value
            continue
        if sub_key in _TEMPERATURES:
            continue  # fmdconv's temperature buffers: the authors' layout has none
        if sub_key not in mapping:
            raise ValueError(
                f"key {key!r} does not belong to a {source} layer in "
                f"{'the authors' if to_fmdconv else 'fmdconv'} layout; check source"
            )
        if _is_linear_weight(sub_key):
            value = value.flatten(1) if to_fmdconv else value[:, :, None, None]
        converted[prefix + mapping[sub_key]] = value

    for prefix in prefixes:
        for name, temperature in temperatures.items():
            converted[prefix + name] = torch.tensor(float(temperature))
    return converted


# --- FDConv (Chen et al., CVPR 2025; github.com/Linwei-Chen/FDConv) -------------------------------
# Their layer (``FDConv``, an nn.Conv2d subclass) keeps only ``weight`` where it stays static (it is
# then an nn.Conv2d here too, same key) and otherwise stores the spectrum ``dft_weight`` with a
# leading ``param_ratio`` axis (1 in their models; fmdconv's FDConv2d has none) and three sub-modules:
#
#   authors' key (layer P)                      fmdconv key
#   P.dft_weight (1, R, C, 2)                   P.dft_weight (R, C, 2)
#   P.KSM_Global.fc.weight (d, C_in, 1, 1)      P.global_modulation.fc.weight (d, C_in)
#   P.KSM_Global.bn.*                           P.global_modulation.bn.*
#   P.KSM_Global.relu.scale / .bias             P.global_modulation.act.scale / .bias
#   P.KSM_Global.channel_fc.* (1x1 conv)        P.global_modulation.heads.input.* (linear)
#   P.KSM_Global.filter_fc.*                    P.global_modulation.heads.output.*
#   P.KSM_Global.spatial_fc.*                   P.global_modulation.heads.spatial.*
#   P.KSM_Global.kernel_fc.*                    P.global_modulation.heads.kernel.*
#   P.KSM_Local.conv.weight, P.KSM_Local.norm.* P.local_modulation.conv.weight, .norm.*
#   P.FBM.freq_weight_conv_list.I.*             P.band_modulation.gates.I.*
FDCONV_SOURCE = "fdconv"
_FDCONV_MODULES = {
    "KSM_Global.relu.": "global_modulation.act.",
    "KSM_Global.channel_fc.": "global_modulation.heads.input.",
    "KSM_Global.filter_fc.": "global_modulation.heads.output.",
    "KSM_Global.spatial_fc.": "global_modulation.heads.spatial.",
    "KSM_Global.kernel_fc.": "global_modulation.heads.kernel.",
    "KSM_Global.fc.": "global_modulation.fc.",
    "KSM_Global.bn.": "global_modulation.bn.",
    "KSM_Local.conv.": "local_modulation.conv.",
    "KSM_Local.norm.": "local_modulation.norm.",
    "FBM.freq_weight_conv_list.": "band_modulation.gates.",
}
# Sub-keys of the authors' global path whose 1x1-convolution weights are linear layers here.
_FDCONV_LINEAR = (
    "KSM_Global.fc.weight",
    *(f"KSM_Global.{h}_fc.weight" for h in ("channel", "filter", "spatial", "kernel")),
)


def convert_fdconv_state_dict(
    state_dict: Mapping[str, Tensor], direction: str = "to_fmdconv"
) -> dict[str, Tensor]:
    """Convert an FDConv authors' state dict (whole model or single layer) to fmdconv's layout, or back.

    The mapping is in the comment above; keys outside FDConv layers pass through. Every key under an
    FDConv layer's sub-modules must map (strict), and ``param_ratio`` must be 1.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; accepted: {', '.join(DIRECTIONS)}")
    to_fmdconv = direction == "to_fmdconv"
    mapping = _FDCONV_MODULES if to_fmdconv else {v: k for k, v in _FDCONV_MODULES.items()}
    keys = list(state_dict)
    prefixes = sorted(_layer_prefixes(keys, "dft_weight"), key=len, reverse=True)
    if not prefixes:
        raise ValueError("no FDConv layer found (no key ending in 'dft_weight'); check source and direction")
    # The top-level sub-modules of one layer in the layout converted from.
    modules = tuple({m.split(".", 1)[0] + "." for m in mapping})
    converted: dict[str, Tensor] = {}
    for key in keys:
        value = state_dict[key]
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        sub_key = None if prefix is None else key[len(prefix) :]
        if sub_key == "dft_weight":
            if to_fmdconv and (value.dim() != 4 or value.shape[0] != 1):
                raise ValueError(f"{key}: expected (1, R, C, 2) (param_ratio 1), got {tuple(value.shape)}")
            converted[key] = value[0] if to_fmdconv else value[None]
            continue
        if sub_key is None or not sub_key.startswith(modules):
            converted[key] = value
            continue
        module = next((m for m in mapping if sub_key.startswith(m)), None)
        if module is None:
            raise ValueError(f"key {key!r} does not belong to an FDConv layer in the expected layout")
        new_sub_key = mapping[module] + sub_key[len(module) :]
        authors_sub_key = sub_key if to_fmdconv else new_sub_key
        if authors_sub_key in _FDCONV_LINEAR:
            value = value.flatten(1) if to_fmdconv else value[:, :, None, None]
        converted[prefix + new_sub_key] = value
    return converted


_KW_MARKER = "attention.norm1.weight"  # every KernelWarehouse layer has it, in both layouts
_KW_AUTHORS_WAREHOUSES = "warehouse_manager.weights."
_KW_WAREHOUSES = ("warehouses.", ".cells")
_KW_LAYER_WAREHOUSE = "warehouse.cells"
_KW_AUTHORS_CLASSIFIER = ("classifier.weight", "classifier.bias")


def _kw_key_to_fmdconv(key: str, single_layer: bool) -> str:
    if key.startswith(_KW_AUTHORS_WAREHOUSES):
        index = key[len(_KW_AUTHORS_WAREHOUSES) :]
        if single_layer:
            if index != "0":
                raise ValueError(f"a single KernelWarehouse layer has one warehouse, got key {key!r}")
            return _KW_LAYER_WAREHOUSE
        return f"{_KW_WAREHOUSES[0]}{index}{_KW_WAREHOUSES[1]}"
    if key in _KW_AUTHORS_CLASSIFIER:
        return key.replace("classifier.", "classifier.1.")
    return key


def _kw_key_to_authors(key: str) -> str | None:
    """The authors' key, or None for a key their layout does not store (tau)."""
    first, last = _KW_WAREHOUSES
    if key == _KW_LAYER_WAREHOUSE:
        return _KW_AUTHORS_WAREHOUSES + "0"
    if key.startswith(first) and key.endswith(last):
        return _KW_AUTHORS_WAREHOUSES + key[len(first) : -len(last)]
    if key in ("classifier.1.weight", "classifier.1.bias"):
        return key.replace("classifier.1.", "classifier.")
    if key == "kernel_temperature" or key.endswith(".kernel_temperature"):
        return None
    return key


def _convert_kernelwarehouse(
    state_dict: Mapping[str, Tensor], to_fmdconv: bool, kernel_temperature: float | None
) -> dict[str, Tensor]:
    """:func:`convert_state_dict` for ``source="kernelwarehouse"`` (see the module docstring)."""
    keys = list(state_dict)
    prefixes = _layer_prefixes(keys, _KW_MARKER)
    if not prefixes:
        raise ValueError(
            f"no kernelwarehouse layer found (no key ending in {_KW_MARKER!r}); check source "
            f"(accepted: {', '.join(SOURCES)})"
        )
    if not to_fmdconv:
        converted = {}
        for key in keys:
            authors_key = _kw_key_to_authors(key)
            if authors_key is not None:
                converted[authors_key] = state_dict[key]
        return converted
    tau = DEFAULT_TEMPERATURES["kernelwarehouse"][1] if kernel_temperature is None else kernel_temperature
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"kernel_temperature (KernelWarehouse's tau) must be in [0, 1], got {tau!r}")
    if not any(key.startswith(_KW_AUTHORS_WAREHOUSES) for key in keys):
        raise ValueError(
            f"no warehouse in the authors' layout (no key starting with {_KW_AUTHORS_WAREHOUSES!r}); "
            "a single layer's state dict needs its warehouse as 'warehouse_manager.weights.0'"
        )
    single_layer = "" in prefixes
    converted = {_kw_key_to_fmdconv(key, single_layer): state_dict[key] for key in keys}
    for prefix in prefixes:
        converted[prefix + "kernel_temperature"] = torch.tensor(float(tau))
    return converted


def unwrap_checkpoint(checkpoint: Mapping[str, object]) -> dict[str, Tensor]:
    """The model state dict inside a training checkpoint.

    Takes the ``"state_dict"`` (or ``"model"``) entry when there is one, as the authors' training
    scripts save ``{"epoch": ..., "state_dict": ..., "optimizer": ...}``, and removes the
    ``"module."`` prefix that (Distributed)DataParallel adds to every key.
    """
    for entry in ("state_dict", "model"):
        inner = checkpoint.get(entry)
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    state = dict(checkpoint)
    if not all(isinstance(value, Tensor) for value in state.values()):
        raise ValueError(
            "checkpoint holds no state dict of tensors (looked at the whole and 'state_dict'/'model')"
        )
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def load_authors_checkpoint(
    path: str | os.PathLike[str],
    source: str,
    gate_temperature: float | None = None,
    kernel_temperature: float | None = None,
) -> dict[str, Tensor]:
    """Read a checkpoint file saved by the authors' code and convert it to fmdconv's layout.

    Example (the ODConv authors' ResNet-18, 4 kernels)::

        model = create_model("resnet18", conv="od", kernel_num=4)
        model.load_state_dict(load_authors_checkpoint("od_resnet18_4x.pth.tar", "odconv"))

    The file is read with ``torch.load(weights_only=True)``, which does not run code from it.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return convert_state_dict(
        unwrap_checkpoint(checkpoint),
        source,
        gate_temperature=gate_temperature,
        kernel_temperature=kernel_temperature,
    )
