"""Sweeps: trainings of one recipe that differ in one axis, and their reports.

:func:`compare` varies the method (``fmdconv compare``, the main job; docs/training.md),
:func:`ablate` one factor of a dynamic model (``fmdconv ablate``, the FMDConv paper's Figure 5;
docs/explain.md). Both run through one sweep engine (:mod:`fmdconv.experiments.sweep`: the run list,
the reuse check, resuming, seeds, failed runs) and report through :mod:`fmdconv.experiments.report`
(mean ± std over seeds, the training-health table, the machine and the recipe).
"""

from fmdconv.experiments.ablation import AblationResult, ablate
from fmdconv.experiments.comparison import DEFAULT_METHODS, MethodResult, compare
from fmdconv.experiments.factors import FACTORS, Factor, ablation_values
from fmdconv.experiments.sweep import RunOutcome

__all__ = [
    "DEFAULT_METHODS",
    "FACTORS",
    "AblationResult",
    "Factor",
    "MethodResult",
    "RunOutcome",
    "ablate",
    "ablation_values",
    "compare",
]
