"""Figures of the FMDConv paper's kind (speed-accuracy, IES/RCS bars, ablations, image grids) as PNGs."""

from fmdconv.viz.plots import plot_ablation, plot_scores, plot_speed_accuracy, save_image_grid

__all__ = ["plot_ablation", "plot_scores", "plot_speed_accuracy", "save_image_grid"]
