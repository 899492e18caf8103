"""Training and evaluation (``fmdconv train``, ``eval``).

See ``docs/training.md``. The method comparison lives in :mod:`fmdconv.experiments`; its names
``compare``, ``MethodResult`` and ``DEFAULT_METHODS`` are still found here, with a
DeprecationWarning.
"""

import importlib
import warnings
from typing import Any

from fmdconv.train.checkpoint import load_checkpoint, save_checkpoint
from fmdconv.train.logging import read_metrics
from fmdconv.train.recipe import Recipe, load_recipe, packaged_recipes
from fmdconv.train.trainer import (
    EvalResult,
    LearningRateSchedule,
    Trainer,
    TrainResult,
    build_model,
    evaluate,
    input_size,
    load_trained_model,
    recalibrate_batchnorm,
    train,
    unwrap,
)

__all__ = [
    "EvalResult",
    "LearningRateSchedule",
    "Recipe",
    "TrainResult",
    "Trainer",
    "build_model",
    "evaluate",
    "input_size",
    "load_checkpoint",
    "load_recipe",
    "load_trained_model",
    "packaged_recipes",
    "read_metrics",
    "recalibrate_batchnorm",
    "save_checkpoint",
    "train",
    "unwrap",
]

_MOVED_TO_EXPERIMENTS = ("compare", "MethodResult", "DEFAULT_METHODS")


def __getattr__(name: str) -> Any:
    # Loaded on use only: the experiments build on this package, not the other way round.
    if name in _MOVED_TO_EXPERIMENTS:
        warnings.warn(
            f"fmdconv.train.{name} moved to fmdconv.experiments.{name}", DeprecationWarning, stacklevel=2
        )
        return getattr(importlib.import_module("fmdconv.experiments"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
