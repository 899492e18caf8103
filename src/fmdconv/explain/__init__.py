"""Visual explanations of classifiers and the FMDConv paper's attention studies: Grad-CAM++ maps,
heat-map overlays and the maps of a dynamic model under each of its attentions (Figure 4).

Importing it loads neither the trainer nor matplotlib (the drawing functions load it when called).
The ablations (Figure 5) are experiments and live in :mod:`fmdconv.experiments`; their names
``ablate``, ``ablation_values``, ``AblationResult``, ``Factor`` and ``FACTORS`` are still found here,
with a DeprecationWarning.
"""

import importlib
import warnings
from typing import Any

from fmdconv.explain.attention_cam import (
    AttentionCAMs,
    attention_state,
    default_target_layer,
    explain_attentions,
    find_layer,
    model_attentions,
    save_attention_grid,
)
from fmdconv.explain.gradcam import GradCAMPlusPlus, GradCAMResult, overlay_heatmap
from fmdconv.explain.inputs import ImageBatch, images_from_dataset, images_from_files

__all__ = [
    "AttentionCAMs",
    "GradCAMPlusPlus",
    "GradCAMResult",
    "ImageBatch",
    "attention_state",
    "default_target_layer",
    "explain_attentions",
    "find_layer",
    "images_from_dataset",
    "images_from_files",
    "model_attentions",
    "overlay_heatmap",
    "save_attention_grid",
]

_MOVED_TO_EXPERIMENTS = ("FACTORS", "AblationResult", "Factor", "ablate", "ablation_values")


def __getattr__(name: str) -> Any:
    # Loaded on use only: the ablations train models, and this package must not load the trainer.
    if name in _MOVED_TO_EXPERIMENTS:
        warnings.warn(
            f"fmdconv.explain.{name} moved to fmdconv.experiments.{name}", DeprecationWarning, stacklevel=2
        )
        return getattr(importlib.import_module("fmdconv.experiments"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
