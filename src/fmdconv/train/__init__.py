"""Training and evaluation (``fmdconv train``, ``eval``).

One module per concern: :mod:`~fmdconv.train.trainer` (the loop: :class:`Trainer`, :func:`train`),
:mod:`~fmdconv.train.schedule` (learning rate), :mod:`~fmdconv.train.precision` (autocast),
:mod:`~fmdconv.train.seeding`, :mod:`~fmdconv.train.distributed` (torchrun, DDP),
:mod:`~fmdconv.train.construction` (what a recipe builds), :mod:`~fmdconv.train.evaluation`
(:func:`evaluate`, precise BatchNorm), :mod:`~fmdconv.train.resume`, :mod:`~fmdconv.train.run_lock`
(one process per run folder), :mod:`~fmdconv.train.checkpoint`, :mod:`~fmdconv.train.logging`,
:mod:`~fmdconv.train.health`. See ``docs/training.md``.

The method comparison lives in :mod:`fmdconv.experiments`; its names ``compare``, ``MethodResult``
and ``DEFAULT_METHODS`` are still found here, with a DeprecationWarning.
"""

import importlib
import warnings
from typing import Any

from fmdconv.train.checkpoint import load_checkpoint, save_checkpoint
from fmdconv.train.construction import (
    build_model,
    build_split,
    has_kernel_num,
    input_size,
    load_trained_model,
)
from fmdconv.train.distributed import DistributedContext, init_distributed, unwrap
from fmdconv.train.evaluation import (
    EvalResult,
    batchnorm_layers,
    evaluate,
    precise_batchnorm,
    recalibrate_batchnorm,
)
from fmdconv.train.logging import read_metrics
from fmdconv.train.precision import autocast, check_precision
from fmdconv.train.recipe import Recipe, load_recipe, packaged_recipes
from fmdconv.train.run_lock import LOCK_FILE, RunFolderInUseError, RunLock
from fmdconv.train.schedule import LearningRateSchedule
from fmdconv.train.seeding import epoch_seed, seed_everything
from fmdconv.train.trainer import Trainer, TrainResult, train

__all__ = [
    "LOCK_FILE",
    "DistributedContext",
    "EvalResult",
    "LearningRateSchedule",
    "Recipe",
    "RunFolderInUseError",
    "RunLock",
    "TrainResult",
    "Trainer",
    "autocast",
    "batchnorm_layers",
    "build_model",
    "build_split",
    "check_precision",
    "epoch_seed",
    "evaluate",
    "has_kernel_num",
    "init_distributed",
    "input_size",
    "load_checkpoint",
    "load_recipe",
    "load_trained_model",
    "packaged_recipes",
    "precise_batchnorm",
    "read_metrics",
    "recalibrate_batchnorm",
    "save_checkpoint",
    "seed_everything",
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
