"""Training, evaluation and the method comparison (``fmdconv train``, ``eval``, ``compare``).

See ``docs/training.md``.
"""

from fmdconv.train.checkpoint import load_checkpoint, save_checkpoint
from fmdconv.train.compare import DEFAULT_METHODS, MethodResult, compare
from fmdconv.train.logging import read_metrics
from fmdconv.train.recipe import Recipe, load_recipe, packaged_recipes
from fmdconv.train.trainer import (
    EvalResult,
    LearningRateSchedule,
    TrainResult,
    build_model,
    evaluate,
    load_trained_model,
    recalibrate_batchnorm,
    train,
)

__all__ = [
    "DEFAULT_METHODS",
    "EvalResult",
    "LearningRateSchedule",
    "MethodResult",
    "Recipe",
    "TrainResult",
    "build_model",
    "compare",
    "evaluate",
    "load_checkpoint",
    "load_recipe",
    "load_trained_model",
    "packaged_recipes",
    "read_metrics",
    "recalibrate_batchnorm",
    "save_checkpoint",
    "train",
]
