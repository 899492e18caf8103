"""The main job: train the static baseline and each dynamic method with one recipe, then report.

:func:`compare` trains every method of ``methods`` with the same recipe (only ``conv`` changes, and
``kernel_num`` if given; a feature attention ``se``, ``cbam`` or ``eca`` is that attention on the
static backbone) into ``out_dir/runs/<method>/``, measures each trained model (parameters,
MACs per image, inference latency) and writes to ``out_dir``:

- ``report.md``: the comparison table and the plots, with the conventions used;
- ``results.json``: the same numbers in full precision, the recipe, the machine and the wall time;
- ``accuracy_vs_time.png``, ``accuracy_vs_macs.png``: top-1 against training time per epoch and
  against MACs per image; ``scores.png``: IES and RCS bars per method (the FMDConv paper's Figure 3).

Conventions: top-1 and top-5 are the final epoch's, on the recipe's test split; training time per
epoch is the mean measured wall time of the training part of each epoch (evaluation excluded);
latency is the median wall time of one forward pass of a batch of ``latency_batch_size`` images in
eval mode, per image; IES = (s per epoch) / top-1 and RCS = top-1 / (s per epoch), as
:mod:`fmdconv.metrics` defines them. Every file is written atomically. The runs go through the sweep
engine (:mod:`fmdconv.experiments.sweep`): runs already in ``out_dir`` are resumed (finished ones
are reused), a run there of another recipe (other than ``data_dir``, ``num_workers`` and
``compile``) is refused, never mixed in, and a method whose run diverged is a failed row.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fmdconv.experiments.report import (
    failed_text,
    group_runs,
    health_section,
    machine_description,
    mean_std,
    percent_mean_std,
    recipe_summary,
)
from fmdconv.experiments.sweep import Run, RunOutcome, failed_run_health, plan_runs, run_health, run_sweep
from fmdconv.layers import MeasurementReport, measurement_report, method_info
from fmdconv.metrics import ies, rcs
from fmdconv.models import METHODS, method_options
from fmdconv.profiling import measure_speed, profile
from fmdconv.train import build_model, input_size, load_trained_model, train
from fmdconv.train.checkpoint import LAST_CHECKPOINT
from fmdconv.train.recipe import Recipe
from fmdconv.utils.devices import resolve_device
from fmdconv.utils.io import dumps_json, write_text_atomic
from fmdconv.utils.machine import machine_record
from fmdconv.viz import plot_scores, plot_speed_accuracy

DEFAULT_METHODS = ("static", "cond", "dy", "od", "fmd")
REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"
PLOT_FILES = {
    "accuracy_vs_time": "accuracy_vs_time.png",
    "accuracy_vs_macs": "accuracy_vs_macs.png",
    "scores": "scores.png",
}
LATENCY_WARMUP = 5
LATENCY_REPEATS = 30


@dataclass(frozen=True)
class MethodResult(RunOutcome):
    """The measured outcome of one method and seed (its run, seed, failure and training health:
    :class:`~fmdconv.experiments.sweep.RunOutcome`).

    Attributes:
        method: a name of :data:`~fmdconv.models.METHODS` (a conv kind, or ``se``, ``cbam``, ``eca``);
            ``label`` its display name.
        params: parameters of the model; ``macs``: MACs per image (:func:`fmdconv.profiling.profile`).
        epochs: epochs trained (of a failed run: the epochs it finished).
        seconds_per_epoch: mean training wall time per epoch.
        train_images_per_second: mean training throughput.
        latency_seconds: inference wall time per image (median, batch ``latency_batch_size``).
        top1, top5: final test accuracies in [0, 1]; ``best_top1`` the best over the epochs.
        ies, rcs: speed-accuracy scores from ``seconds_per_epoch`` and ``top1``.

    A failed run has every measurement but ``params`` and ``macs`` None.
    """

    method: str
    label: str
    params: int
    macs: int
    epochs: int
    seconds_per_epoch: float | None
    train_images_per_second: float | None
    latency_seconds: float | None
    top1: float | None
    top5: float | None
    best_top1: float | None
    ies: float | None
    rcs: float | None

    def plot_row(self) -> dict[str, Any]:
        """The row :mod:`fmdconv.viz` plots (time in s/epoch)."""
        return {
            "method": self.label,
            "time": self.seconds_per_epoch,
            "macs": self.macs,
            "top1": self.top1,
            "top5": self.top5,
            "ies": self.ies,
            "rcs": self.rcs,
        }


def mean_plot_row(group: list[MethodResult]) -> dict[str, Any]:
    """The plot row of one method, averaged over its seeds (none of them failed)."""
    rows = [r.plot_row() for r in group]
    means = {key: mean_std([row[key] for row in rows])[0] for key in rows[0] if key != "method"}
    return {"method": rows[0]["method"], **means}


def check_methods(methods: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``methods`` as a tuple, or a ValueError if it is empty, repeats or names an unknown method."""
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown or len(set(methods)) != len(methods):
        raise ValueError(
            f"methods must be distinct names among {', '.join(METHODS)}; got {', '.join(methods) or 'none'}"
        )
    return methods


def method_recipe_of(recipe: Recipe, method: str) -> Recipe:
    """``recipe`` for ``method``: its convolution, or a feature attention on the static backbone."""
    return recipe.replace(**method_options(method))


def measure_method(
    run: Run, device: torch.device, latency_batch_size: int, history: list[dict[str, Any]], best_top1: float
) -> MethodResult:
    """Profile and time the model trained in ``run``'s folder and gather its accuracies."""
    model, _, _ = load_trained_model(run.run_dir / LAST_CHECKPOINT, device)
    size = input_size(run.recipe)
    counts = profile(model, size)
    speed = measure_speed(
        model, size, latency_batch_size, "inference", device, warmup=LATENCY_WARMUP, repeats=LATENCY_REPEATS
    )
    final = history[-1]
    seconds = sum(record["train_seconds"] for record in history) / len(history)
    images_per_second = sum(record["train_images_per_second"] for record in history) / len(history)
    top1 = final["test_top1"]
    return MethodResult(
        method=str(run.setting),
        label=run.label,
        params=counts.params,
        macs=counts.macs,
        epochs=final["epoch"],
        seconds_per_epoch=seconds,
        train_images_per_second=images_per_second,
        latency_seconds=speed.per_sample,
        top1=top1,
        top5=final["test_top5"],
        best_top1=best_top1,
        ies=ies(seconds, top1),
        rcs=rcs(seconds, top1),
        run_dir=str(run.run_dir),
        seed=run.recipe.seed,
        **run_health(history),
    )


def failed_method(run: Run, failure: str) -> MethodResult:
    """The result of a method whose run stopped on a non-finite value: its size, no measurement."""
    counts = profile(build_model(run.recipe), input_size(run.recipe))
    health = failed_run_health(run.run_dir)
    return MethodResult(
        method=str(run.setting),
        label=run.label,
        params=counts.params,
        macs=counts.macs,
        epochs=len(health["epoch_top1"]),
        seconds_per_epoch=None,
        train_images_per_second=None,
        latency_seconds=None,
        top1=None,
        top5=None,
        best_top1=None,
        ies=None,
        rcs=None,
        run_dir=str(run.run_dir),
        seed=run.recipe.seed,
        failure=failure,
        **health,
    )


def _millions(count: float) -> str:
    return f"{count / 1e6:.2f} M"


def markdown_table(results: list[MethodResult], latency_batch_size: int) -> str:
    """The comparison table in Markdown, one row per method: means (top-1/top-5 mean ± std) over
    seeds; a method with a failed run shows ``failed`` instead of its accuracies."""
    header = (
        "| Method | Params | MACs | Train time / epoch | Latency (batch "
        f"{latency_batch_size}) | Top-1 | Top-5 | IES (s) | RCS (1/s) |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for group in group_runs(results, key=lambda result: result.method):
        r, failed = group[0], failed_text(group)
        size = f"| {r.label} | {_millions(r.params)} | {_millions(r.macs)} |"
        if failed is not None:
            lines.append(f"{size} - | - | **{failed}** | **{failed}** | - | - |")
            continue
        row = mean_plot_row(group)
        ies_text = f"{row['ies']:.1f}" if math.isfinite(row["ies"]) else "∞"
        latency = mean_std([g.latency_seconds for g in group])[0]
        lines.append(
            f"{size} {row['time']:.1f} s | {latency * 1e3:.2f} ms | "
            f"{percent_mean_std([g.top1 for g in group])} | "
            f"{percent_mean_std([g.top5 for g in group])} | {ies_text} | {row['rcs']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: Path,
    recipe: Recipe,
    results: list[MethodResult],
    latency_batch_size: int,
    device: torch.device,
    wall_seconds: float,
) -> Path:
    """Write ``results.json``, the PNG plots and ``report.md`` to ``out_dir``; returns the report's path."""
    groups = group_runs(results, key=lambda result: result.method)
    rows = [mean_plot_row(group) for group in groups if failed_text(group) is None]
    failed = [group[0].label for group in groups if failed_text(group) is not None]
    seeds = max(len(group) for group in groups)
    plots = ""
    if rows:  # none when every method failed
        plot_speed_accuracy(rows, out_dir / PLOT_FILES["accuracy_vs_time"], x="time", time_unit="s/epoch")
        plot_speed_accuracy(rows, out_dir / PLOT_FILES["accuracy_vs_macs"], x="macs")
        plots = (
            f"![Top-1 against training time per epoch]({PLOT_FILES['accuracy_vs_time']})\n"
            f"![Top-1 against MACs per image]({PLOT_FILES['accuracy_vs_macs']})\n"
        )
    # A method with top-1 = 0 has an infinite IES: it gets no bars rather than a misleading finite one.
    scored = [row for row in rows if math.isfinite(row["ies"])]
    unscored = [row["method"] for row in rows if not math.isfinite(row["ies"])]
    scores_note = f" No IES/RCS bars for {', '.join(unscored)} (top-1 = 0)." if unscored else ""
    if failed:
        scores_note += f" Not plotted: {', '.join(failed)} (failed, see below)."
    scores_image = f"![IES and RCS per method]({PLOT_FILES['scores']})\n" if scored else ""
    if scored:
        plot_scores(scored, out_dir / PLOT_FILES["scores"], time_unit="s/epoch")
    machine = machine_description(device)
    seeds_note = (
        f"{seeds} seeds per method (seed {results[0].seed} on): mean ± standard deviation over seeds "
        "(times and scores: means). "
        if seeds > 1
        else ""
    )
    measuring = measurement_report()
    results_json = {
        "recipe": recipe.to_dict(),
        "methods": [asdict(r) for r in results],
        "seeds": seeds,
        "failed_runs": sum(r.failed for r in results),
        "latency_batch_size": latency_batch_size,
        "machine": machine,
        "machine_details": machine_record(device),
        "wall_seconds": wall_seconds,
        "formulation_choice": {
            "measuring": measuring.enabled,
            "signatures_measured": measuring.measured,
            "measuring_seconds": measuring.seconds,
            "signatures_from_cache": measuring.loaded,
        },
    }
    write_text_atomic(out_dir / RESULTS_FILE, dumps_json(results_json, indent=2) + "\n")
    report = f"""# Dynamic convolutions compared on {recipe.dataset}

{recipe_summary(recipe)}. Machine: {machine}. Wall time of this `fmdconv compare` run
(training, evaluation and measurements): {wall_seconds / 60:.1f} min. {choice_sentence(measuring)}

{markdown_table(results, latency_batch_size)}
- {seeds_note}Top-1 / top-5: final epoch, test split. Train time / epoch: mean wall time of the
  training part of an epoch. Latency: median of {LATENCY_REPEATS} forward passes in eval mode, per
  image. MACs per image follow `fmdconv.profiling` (static conv MACs plus attention and kernel aggregation).
- IES = (s per epoch) / top-1 (lower is better); RCS = top-1 / (s per epoch) (higher is better), the
  conventions of `fmdconv.metrics`. Times are comparable only on the same machine.{scores_note}

{health_section([(group[0].label, group) for group in groups], "Method")}
{plots}{scores_image}"""
    write_text_atomic(out_dir / REPORT_FILE, report)
    return out_dir / REPORT_FILE


def choice_sentence(measuring: MeasurementReport) -> str:
    """What the measured formulation choice cost this run, for the report (docs/speed.md)."""
    if not measuring.enabled and not measuring.measured:
        return "Formulations: the hand rule (measuring switched off)."
    return (
        f"Formulations: measured choice, {measuring.measured} layer signatures timed in "
        f"{measuring.seconds:.1f} s, {measuring.loaded} taken from the cache file."
    )


def compare(
    recipe: Recipe,
    out_dir: str | Path,
    methods: tuple[str, ...] | list[str] = DEFAULT_METHODS,
    device: str | torch.device | None = None,
    latency_batch_size: int = 1,
    progress: bool = True,
    tensorboard: bool = False,
    seeds: int = 1,
) -> list[MethodResult]:
    """Train each of ``methods`` with ``recipe`` (``conv``, ``attention`` replaced); report to ``out_dir``.

    Args:
        recipe: the shared settings; its ``conv`` and ``attention`` are ignored.
        out_dir: report folder; the runs go to ``out_dir/runs/<method>/``. Runs already there are
            resumed (finished ones reused) if their recipe is the method's up to ``data_dir``,
            ``num_workers`` and ``compile``; any other difference (``epochs`` included) raises a
            ValueError naming it.
        methods: names of :data:`~fmdconv.models.METHODS` (conv kinds, or the feature attentions
            ``se``, ``cbam``, ``eca`` on the static backbone) to compare, in the order of the table.
        device: where to train and time (default: CUDA if available).
        latency_batch_size: images per forward pass when timing inference.
        progress: draw progress bars and a line per method on stderr.
        tensorboard: also write TensorBoard scalars for each run.
        seeds: runs per method, with seeds ``recipe.seed``, ``recipe.seed + 1``, ...; with more than
            one, the runs go to ``out_dir/runs/<method>/seed<seed>/`` (a one-seed run already in
            ``out_dir/runs/<method>/`` is reused as its seed's run) and the table shows mean ±
            standard deviation (``results.json`` keeps every run).

    Returns:
        One :class:`MethodResult` per method and seed: methods in order, each method's seeds in
        order. A run that stopped on a non-finite loss or non-finite outputs does not stop the
        comparison: its result is failed (``failure`` says why, no accuracy).
    """
    methods = check_methods(methods)
    if (
        isinstance(latency_batch_size, bool)
        or not isinstance(latency_batch_size, int)
        or latency_batch_size < 1
    ):
        raise ValueError(f"latency_batch_size must be an int >= 1; got {latency_batch_size!r}")
    out_dir = Path(out_dir)
    torch_device = resolve_device(device)
    settings = [
        (method, method_info(method).label, method_recipe_of(recipe, method), out_dir / "runs" / method)
        for method in methods
    ]
    runs = plan_runs(settings, seeds)

    def train_method(run: Run) -> MethodResult:
        result = train(
            run.recipe,
            run.run_dir,
            resume=run.resume,
            device=torch_device,
            progress=progress,
            tensorboard=tensorboard,
        )
        return measure_method(run, torch_device, latency_batch_size, result.history, result.best_top1)

    results, wall_seconds = run_sweep(runs, train_method, failed_method, progress)
    report = write_report(out_dir, recipe, results, latency_batch_size, torch_device, wall_seconds)
    if progress:
        print(f"wrote {report} ({wall_seconds / 60:.1f} min)", file=sys.stderr)
    return results
