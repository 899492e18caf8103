"""Visual explanations of classifiers and the FMDConv paper's attention studies: Grad-CAM++ maps,
heat-map overlays, the maps of a dynamic model under each of its attentions (Figure 4), and
ablations that train once per value of one factor (Figure 5)."""

from fmdconv.explain.ablation import FACTORS, AblationResult, Factor, ablate, ablation_values
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
    "FACTORS",
    "AblationResult",
    "AttentionCAMs",
    "Factor",
    "GradCAMPlusPlus",
    "GradCAMResult",
    "ImageBatch",
    "ablate",
    "ablation_values",
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
