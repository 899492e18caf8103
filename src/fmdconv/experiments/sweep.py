"""The sweep engine of ``fmdconv compare`` and ``fmdconv ablate``: trainings of one recipe that differ
in one axis (the method, or one factor's value), each over one or more seeds.

A sweep is a list of :class:`Run`\\ s, one per setting and seed (:func:`plan_runs`), trained in order
(:func:`run_sweep`). Before anything trains, every run folder that already holds a run is checked to
hold this very recipe (:func:`check_reusable`), so a report never mixes two recipes; such a run is
then resumed, or reused as it is when it is finished, and an interrupted sweep continues where it
stopped. A run that stops on a non-finite loss or non-finite outputs (``FloatingPointError``) does
not end the sweep: it becomes a failed result, reported as such, with no accuracy.

Folders: a one-seed sweep trains a setting in ``<setting folder>/``, a sweep of several seeds in
``<setting folder>/seed<seed>/``. A finished or partial run of a seed already in the other layout is
used where it is (:func:`seed_run_dir`): adding seeds to a one-seed sweep reuses its run as that
seed's run instead of training it again beside it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fmdconv.train.checkpoint import LAST_CHECKPOINT, load_checkpoint
from fmdconv.train.logging import METRICS_FILE, read_metrics
from fmdconv.train.recipe import Recipe, recipe_differences, saved_recipe

# Settings a reused run may differ in: where the data is and how it is loaded change no result.
REUSABLE_DIFFERENCES = ("data_dir", "num_workers", "compile")

Setting = int | float | str
Outcome = TypeVar("Outcome")


@dataclass(frozen=True, kw_only=True)
class RunOutcome:
    """What every run of a sweep reports beside its own measurements.

    Attributes:
        run_dir: the run's folder (``last.pt``, ``best.pt``, ``metrics.jsonl``).
        seed: the run's seed (a sweep with ``seeds=N`` trains seeds ``recipe.seed`` ... ``+ N - 1``).
        failure: None for a run that finished; for one that stopped on a non-finite loss or
            non-finite outputs, the reason (its accuracies are then None: there are none to report).
        grad_norm_max, grad_spikes: the largest global gradient norm of the run and the number of
            steps flagged as spikes (more than 10x the recent level; :mod:`fmdconv.train.health`).
        gate_saturation, kernel_max_prob: at the last logged step, the fraction of sigmoid gates
            below 0.01 or above 0.99 and the mean largest kernel-softmax probability (None where the
            method has none).
        epoch_top1: test top-1 after each finished epoch.
    """

    run_dir: str
    seed: int = 0
    failure: str | None = None
    grad_norm_max: float = 0.0
    grad_spikes: int = 0
    gate_saturation: float | None = None
    kernel_max_prob: float | None = None
    epoch_top1: tuple[float, ...] = ()

    @property
    def failed(self) -> bool:
        """Whether the run stopped on a non-finite loss or non-finite outputs."""
        return self.failure is not None


@dataclass(frozen=True)
class Run:
    """One training of a sweep.

    Attributes:
        setting: what the sweep's axis takes in this run (a method name, a factor's value).
        label: how progress lines name the setting.
        recipe: the run's whole recipe, its seed included.
        run_dir: the run's folder.
        seeds: the seeds per setting of the sweep.
    """

    setting: Setting
    label: str
    recipe: Recipe
    run_dir: Path
    seeds: int

    @property
    def resume(self) -> bool:
        """Whether the folder holds a run to continue (or to reuse, when it is finished)."""
        return (self.run_dir / LAST_CHECKPOINT).exists()


def check_seeds(seeds: int) -> None:
    """Raise a ValueError unless ``seeds`` (runs per setting) is an int >= 1."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1; got {seeds!r}")


def _saved_recipe(run_dir: Path) -> Recipe | None:
    """The recipe of the run in ``run_dir``, or None where it holds none."""
    checkpoint = run_dir / LAST_CHECKPOINT
    return saved_recipe(load_checkpoint(checkpoint)["recipe"]) if checkpoint.exists() else None


def seed_run_dir(setting_dir: Path, seed: int, seeds: int) -> Path:
    """The folder of one seed's run of a setting: ``setting_dir`` for one seed, else
    ``setting_dir/seed<seed>``; but where that folder holds no run of ``seed`` and the other one does,
    the other one."""
    single, per_seed = setting_dir, setting_dir / f"seed{seed}"
    layout, other = (per_seed, single) if seeds > 1 else (single, per_seed)
    for folder in (layout, other):
        saved = _saved_recipe(folder)
        if saved is not None and saved.seed == seed:
            return folder
    return layout


def check_reusable(run_dir: Path, recipe: Recipe) -> None:
    """Raise a ValueError saying what differs if ``run_dir`` holds a run of another recipe than ``recipe``."""
    saved = _saved_recipe(run_dir)
    if saved is None:
        return
    differences = recipe_differences(saved, recipe, ignore=REUSABLE_DIFFERENCES)
    if differences:
        listed = "; ".join(f"{name} {old!r} there, {new!r} now" for name, (old, new) in differences.items())
        raise ValueError(
            f"{run_dir} holds a run of another recipe ({listed}): a report must not mix them; "
            "choose another --out, or delete that run to train it again"
        )


def plan_runs(settings: Sequence[tuple[Setting, str, Recipe, Path]], seeds: int) -> list[Run]:
    """The runs of a sweep: for each ``(setting, label, recipe, folder)`` in order, one run per seed
    ``recipe.seed`` ... ``recipe.seed + seeds - 1``.

    Raises:
        ValueError: ``seeds`` is not an int >= 1, or a run folder holds a run of another recipe
            (checked for every run before any trains).
    """
    check_seeds(seeds)
    runs = [
        Run(setting, label, recipe.replace(seed=seed), seed_run_dir(folder, seed, seeds), seeds)
        for setting, label, recipe, folder in settings
        for seed in range(recipe.seed, recipe.seed + seeds)
    ]
    for run in runs:
        check_reusable(run.run_dir, run.recipe)
    return runs


def run_sweep(
    runs: Sequence[Run],
    train_run: Callable[[Run], Outcome],
    failed_run: Callable[[Run, str], Outcome],
    progress: bool = True,
) -> tuple[list[Outcome], float]:
    """Train ``runs`` in order: ``train_run(run)`` trains (or resumes, or reuses) one run and measures
    it; a run it stops with a ``FloatingPointError`` (a non-finite loss or non-finite outputs) gives
    ``failed_run(run, reason)`` instead, and the sweep goes on.

    Returns:
        The outcomes in the order of ``runs``, and the wall time of the sweep in seconds.
    """
    start = time.perf_counter()
    outcomes = []
    for index, run in enumerate(runs, 1):
        name = run.label + (f" (seed {run.recipe.seed})" if run.seeds > 1 else "")
        if progress:
            print(f"[{index}/{len(runs)}] {name} -> {run.run_dir}", file=sys.stderr)
        try:
            outcomes.append(train_run(run))
        except FloatingPointError as error:
            if progress:
                print(f"failed: {name}: {error}", file=sys.stderr)
            outcomes.append(failed_run(run, str(error)))
    return outcomes, time.perf_counter() - start


def run_health(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The health fields of a finished run (``grad_norm_max``, ``grad_spikes``, ``gate_saturation``,
    ``kernel_max_prob``, ``epoch_top1``; see :class:`RunOutcome`) from its epoch records."""
    final = history[-1]
    return {
        "grad_norm_max": max(record.get("grad_norm_max", 0.0) for record in history),
        "grad_spikes": sum(record.get("grad_spikes", 0) for record in history),
        "gate_saturation": final.get("gate_saturation"),
        "kernel_max_prob": final.get("kernel_max_prob"),
        "epoch_top1": tuple(record["test_top1"] for record in history),
    }


def failed_run_health(run_dir: Path) -> dict[str, Any]:
    """The health fields of a run that stopped on a non-finite value, from its metrics log: the
    largest gradient norm of its logged steps (one logged as null, non-finite, counts as infinite),
    the spikes of its finished epochs plus the one warned of in the epoch it stopped in, the
    attention statistics of its last logged step, and its finished epochs' top-1."""
    path = run_dir / METRICS_FILE
    records = read_metrics(path) if path.exists() else []
    epochs = [record for record in records if record["kind"] == "epoch"]
    finished = epochs[-1]["iteration"] if epochs else 0
    steps = [record for record in records if record["kind"] == "step"]
    norms = [math.inf if record.get("grad_norm_max") is None else record["grad_norm_max"] for record in steps]
    warned = any(record["kind"] == "warning" and record["iteration"] > finished for record in records)
    last = steps[-1] if steps else {}
    return {
        "grad_norm_max": max(norms, default=0.0),
        "grad_spikes": sum(record.get("grad_spikes", 0) for record in epochs) + warned,
        "gate_saturation": last.get("gate_saturation"),
        "kernel_max_prob": last.get("kernel_max_prob"),
        "epoch_top1": tuple(record["test_top1"] for record in epochs),
    }
