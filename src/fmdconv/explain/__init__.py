"""Visual explanations of classifiers: Grad-CAM++ maps, heat-map overlays, and the maps of a dynamic
model under each of its attentions (the FMDConv paper's Figure 4)."""

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
