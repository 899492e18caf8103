"""Evaluation metrics: speed-accuracy scores (IES, RCS) and top-k accuracy."""

from fmdconv.metrics.speed_accuracy import ies, rcs, top_k_accuracy, top_k_hits

__all__ = ["ies", "rcs", "top_k_accuracy", "top_k_hits"]
