"""Visual explanations of classifiers: Grad-CAM++ maps and heat-map overlays."""

from fmdconv.explain.gradcam import GradCAMPlusPlus, GradCAMResult, overlay_heatmap

__all__ = ["GradCAMPlusPlus", "GradCAMResult", "overlay_heatmap"]
