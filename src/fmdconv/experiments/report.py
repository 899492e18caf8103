"""What the reports of ``fmdconv compare`` and ``fmdconv ablate`` share: statistics over seeds, the
training-health table, failed runs, and the sentences describing the recipe and the machine."""

from __future__ import annotations

import itertools
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from fmdconv.experiments.sweep import RunOutcome
from fmdconv.train.health import SATURATION_MARGIN, SPIKE_FACTOR
from fmdconv.train.recipe import Recipe
from fmdconv.utils.machine import machine_line, machine_record

FAILED = "failed"
Result = TypeVar("Result", bound=RunOutcome)


def group_runs(results: Sequence[Result], key: Callable[[Result], object]) -> list[list[Result]]:
    """``results`` grouped by ``key`` (a setting's seeds, which follow each other), in order."""
    return [list(group) for _, group in itertools.groupby(results, key=key)]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def percent_mean_std(values: list[float]) -> str:
    """Proportions as a percentage: the value alone, or ``mean% ± std`` (in points) for several."""
    mean, std = mean_std(values)
    return f"{mean:.2%}" if len(values) == 1 else f"{mean:.2%} ± {std * 100:.2f}"


def failed_text(group: Sequence[RunOutcome]) -> str | None:
    """What a table shows instead of a group's accuracies when a run of it failed (None if none did):
    a mean over the other seeds would hide the failure."""
    failures = sum(r.failed for r in group)
    if not failures:
        return None
    return FAILED if len(group) == 1 else f"{FAILED} ({failures} of {len(group)} seeds)"


def _optional(values: list[float | None], text: str) -> str:
    defined = [v for v in values if v is not None]
    return text.format(mean_std(defined)[0]) if defined else "-"


def health_table(groups: Sequence[tuple[str, Sequence[RunOutcome]]], first_column: str) -> str:
    """Training health in Markdown, one row per ``(label, runs)`` group: gradient norms, attention
    saturation, top-1 per epoch, failed runs.

    Over a group's seeds: the largest gradient norm, the summed spike count, mean saturation and
    max-probability, the mean top-1 of each epoch all its runs finished, and how many runs failed.
    """
    lines = [
        f"| {first_column} | Max grad norm | Grad spikes | Saturated gates | Kernel max-prob | "
        "Test top-1 per epoch | Failed runs |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for label, group in groups:
        epochs = min(len(g.epoch_top1) for g in group)
        per_epoch = " → ".join(f"{mean_std([g.epoch_top1[e] for g in group])[0]:.1%}" for e in range(epochs))
        failures = sum(g.failed for g in group)
        failed = f"**{failures}**" if failures else "0"
        lines.append(
            f"| {label} | {max(g.grad_norm_max for g in group):.3g} | "
            f"{sum(g.grad_spikes for g in group)} | "
            f"{_optional([g.gate_saturation for g in group], '{:.1%}')} | "
            f"{_optional([g.kernel_max_prob for g in group], '{:.2f}')} | {per_epoch or '-'} | "
            f"{failed}{'' if len(group) == 1 else f' of {len(group)}'} |"
        )
    return "\n".join(lines) + "\n"


def health_section(groups: Sequence[tuple[str, Sequence[RunOutcome]]], first_column: str) -> str:
    """The health table with its legend, and a line per failed run with its reason."""
    failed = [(label, r) for label, group in groups for r in group if r.failed]
    failures = "".join(
        f"- **{label} failed** (seed {r.seed}, {r.run_dir}): {r.failure}\n" for label, r in failed
    )
    return f"""Training health (docs/training.md): the largest global gradient norm of a run and its gradient
spikes (steps above {SPIKE_FACTOR:g}x the recent level), the fraction of saturated sigmoid gates
(< {SATURATION_MARGIN:g} or > {1 - SATURATION_MARGIN:g}) and the mean largest kernel-softmax
probability (1/n uniform, 1 one-hot) at the last logged step, the test top-1 after each epoch, and
the runs that failed: stopped on a non-finite loss or non-finite outputs, so they have no accuracy.

{health_table(groups, first_column)}
{failures}"""


def _count(number: float, noun: str) -> str:
    return f"{number:g} {noun}{'' if number == 1 else 's'}"


def recipe_summary(recipe: Recipe) -> str:
    """One sentence describing a recipe's model, data and schedule, for reports."""
    subset = f"first {recipe.subset} training images" if recipe.subset else "all training images"
    test = f"first {recipe.test_subset} test images" if recipe.test_subset else "the whole test split"
    warmup = f", {recipe.warmup_epochs:g} warm-up epochs" if recipe.warmup_epochs else ""
    return (
        f"{recipe.model} (width {recipe.width:g}, {recipe.stem} stem, n = {recipe.kernel_num}) on "
        f"{recipe.dataset} ({subset}; accuracy on {test}), {_count(recipe.epochs, 'epoch')}, "
        f"batch {recipe.batch_size}, "
        f"SGD lr {recipe.lr:g} ({recipe.schedule}{warmup}), weight decay {recipe.weight_decay:g}, "
        f"{recipe.precision}{', compiled' if recipe.compile else ''}; gate temperatures anneal to 1 over "
        f"{_count(recipe.temperature_warm_epochs, 'epoch')}, kernel temperature {recipe.kernel_temperature}"
    )


def machine_description(device: torch.device) -> str:
    """The machine of a report: CPU model and flags, threads, the GPU on CUDA, torch and Python."""
    policy = f", OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}" if "OMP_WAIT_POLICY" in os.environ else ""
    return f"{machine_line(machine_record(device))}{policy}, Python {platform.python_version()}"
