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
:mod:`fmdconv.metrics` defines them. Every file is written atomically. Runs already in ``out_dir``
are resumed (finished ones are reused), so an interrupted comparison continues where it stopped; a
run there of another recipe (other than ``data_dir``, ``num_workers`` and ``compile``) is refused, never
mixed in.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fmdconv.metrics import ies, rcs
from fmdconv.models import METHODS, method_options
from fmdconv.profiling import measure_speed, profile
from fmdconv.train.checkpoint import LAST_CHECKPOINT, load_checkpoint
from fmdconv.train.construction import input_size, load_trained_model
from fmdconv.train.health import SATURATION_MARGIN, SPIKE_FACTOR
from fmdconv.train.recipe import Recipe, recipe_differences, saved_recipe
from fmdconv.train.trainer import train
from fmdconv.utils.devices import resolve_device
from fmdconv.utils.io import dumps_json, write_text_atomic
from fmdconv.utils.machine import machine_line, machine_record
from fmdconv.viz import plot_scores, plot_speed_accuracy

METHOD_LABELS = {
    "static": "Static",
    "cond": "CondConv",
    "dy": "DyConv",
    "od": "ODConv",
    "fmd": "FMDConv",
    "dcd": "DCD",
    "fd": "FDConv",
    "kw": "KernelWarehouse",
    "se": "SE",
    "cbam": "CBAM",
    "eca": "ECA",
}
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
class MethodResult:
    """The measured outcome of one method.

    Attributes:
        method: a name of :data:`~fmdconv.models.METHODS` (a conv kind, or ``se``, ``cbam``, ``eca``);
            ``label`` its display name.
        params: parameters of the model; ``macs``: MACs per image (:func:`fmdconv.profiling.profile`).
        seconds_per_epoch: mean training wall time per epoch.
        train_images_per_second: mean training throughput.
        latency_seconds: inference wall time per image (median, batch ``latency_batch_size``).
        top1, top5: final test accuracies in [0, 1]; ``best_top1`` the best over the epochs.
        ies, rcs: speed-accuracy scores from ``seconds_per_epoch`` and ``top1``.
        run_dir: the method's training folder.
        seed: the run's seed (``compare(seeds=N)`` trains seeds ``recipe.seed`` ... ``+ N - 1``).
        grad_norm_max, grad_spikes: the largest global gradient norm of the run and the number of
            steps flagged as spikes (more than 10x the recent level; :mod:`fmdconv.train.health`).
        gate_saturation, kernel_max_prob: at the last logged step, the fraction of sigmoid gates
            below 0.01 or above 0.99 and the mean largest kernel-softmax probability (None where the
            method has none).
        epoch_top1: test top-1 after each epoch.
    """

    method: str
    label: str
    params: int
    macs: int
    epochs: int
    seconds_per_epoch: float
    train_images_per_second: float
    latency_seconds: float
    top1: float
    top5: float
    best_top1: float
    ies: float
    rcs: float
    run_dir: str
    seed: int = 0
    grad_norm_max: float = 0.0
    grad_spikes: int = 0
    gate_saturation: float | None = None
    kernel_max_prob: float | None = None
    epoch_top1: tuple[float, ...] = ()

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


# Settings a reused run may differ in: where the data is and how it is loaded change no result.
REUSABLE_DIFFERENCES = ("data_dir", "num_workers", "compile")


def check_reusable(run_dir: Path, recipe: Recipe) -> None:
    """Raise a ValueError saying what differs if ``run_dir`` holds a run of another recipe than ``recipe``."""
    checkpoint = run_dir / LAST_CHECKPOINT
    if not checkpoint.exists():
        return
    saved = saved_recipe(load_checkpoint(checkpoint)["recipe"])
    differences = recipe_differences(saved, recipe, ignore=REUSABLE_DIFFERENCES)
    if differences:
        listed = "; ".join(f"{name} {old!r} there, {new!r} now" for name, (old, new) in differences.items())
        raise ValueError(
            f"{run_dir} holds a run of another recipe ({listed}): a report must not mix them; "
            "choose another --out, or delete that run to train it again"
        )


def group_by_method(results: list[MethodResult]) -> list[list[MethodResult]]:
    """The results grouped per method (one list per method, its seeds in order), methods in order."""
    groups: dict[str, list[MethodResult]] = {}
    for result in results:
        groups.setdefault(result.method, []).append(result)
    return list(groups.values())


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def percent_mean_std(values: list[float]) -> str:
    """Proportions as a percentage: the value alone, or ``mean% ± std`` (in points) for several."""
    mean, std = mean_std(values)
    return f"{mean:.2%}" if len(values) == 1 else f"{mean:.2%} ± {std * 100:.2f}"


def check_seeds(seeds: int) -> None:
    """Raise a ValueError unless ``seeds`` (runs per setting) is an int >= 1."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1; got {seeds!r}")


def seed_run_dir(run_dir: Path, seed: int, seeds: int) -> Path:
    """The folder of one seed's run of a setting: ``run_dir`` for one seed, else ``run_dir/seed<seed>``."""
    return run_dir / f"seed{seed}" if seeds > 1 else run_dir


def mean_plot_row(group: list[MethodResult]) -> dict[str, Any]:
    """The plot row of one method, averaged over its seeds."""
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
    method: str,
    recipe: Recipe,
    run_dir: Path,
    device: torch.device,
    latency_batch_size: int,
    history: list[dict[str, Any]],
    best_top1: float,
) -> MethodResult:
    """Profile and time the model trained in ``run_dir`` and gather its accuracies."""
    model, _, _ = load_trained_model(run_dir / LAST_CHECKPOINT, device)
    size = input_size(recipe)
    counts = profile(model, size)
    speed = measure_speed(
        model, size, latency_batch_size, "inference", device, warmup=LATENCY_WARMUP, repeats=LATENCY_REPEATS
    )
    final = history[-1]
    seed = recipe.seed
    seconds = sum(record["train_seconds"] for record in history) / len(history)
    images_per_second = sum(record["train_images_per_second"] for record in history) / len(history)
    top1 = final["test_top1"]
    return MethodResult(
        method=method,
        label=METHOD_LABELS[method],
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
        run_dir=str(run_dir),
        seed=seed,
        **run_health(history),
    )


def run_health(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The health fields of a run (``grad_norm_max``, ``grad_spikes``, ``gate_saturation``,
    ``kernel_max_prob``, ``epoch_top1``; see :class:`MethodResult`) from its epoch records."""
    final = history[-1]
    return {
        "grad_norm_max": max(record.get("grad_norm_max", 0.0) for record in history),
        "grad_spikes": sum(record.get("grad_spikes", 0) for record in history),
        "gate_saturation": final.get("gate_saturation"),
        "kernel_max_prob": final.get("kernel_max_prob"),
        "epoch_top1": tuple(record["test_top1"] for record in history),
    }


def _millions(count: float) -> str:
    return f"{count / 1e6:.2f} M"


def markdown_table(results: list[MethodResult], latency_batch_size: int) -> str:
    """The comparison table in Markdown, one row per method: means (top-1/top-5 mean ± std) over seeds."""
    header = (
        "| Method | Params | MACs | Train time / epoch | Latency (batch "
        f"{latency_batch_size}) | Top-1 | Top-5 | IES (s) | RCS (1/s) |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for group in group_by_method(results):
        r, row = group[0], mean_plot_row(group)
        ies_text = f"{row['ies']:.1f}" if math.isfinite(row["ies"]) else "∞"
        latency = mean_std([g.latency_seconds for g in group])[0]
        lines.append(
            f"| {r.label} | {_millions(r.params)} | {_millions(r.macs)} | {row['time']:.1f} s | "
            f"{latency * 1e3:.2f} ms | {percent_mean_std([g.top1 for g in group])} | "
            f"{percent_mean_std([g.top5 for g in group])} | {ies_text} | {row['rcs']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _optional(values: list[float | None], text: str) -> str:
    defined = [v for v in values if v is not None]
    return text.format(mean_std(defined)[0]) if defined else "-"


def health_table(groups: list[tuple[str, list[Any]]], first_column: str = "Method") -> str:
    """Training health in Markdown, one row per ``(label, runs)`` group: gradient norms, attention
    saturation, top-1 per epoch. The runs carry :func:`run_health`'s fields (:class:`MethodResult`,
    :class:`~fmdconv.explain.ablation.AblationResult`).

    Over a group's seeds: the largest gradient norm, the summed spike count, mean saturation and
    max-probability, and the mean top-1 of each epoch.
    """
    lines = [
        f"| {first_column} | Max grad norm | Grad spikes | Saturated gates | Kernel max-prob | "
        "Test top-1 per epoch |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, group in groups:
        epochs = min(len(g.epoch_top1) for g in group)
        per_epoch = " → ".join(f"{mean_std([g.epoch_top1[e] for g in group])[0]:.1%}" for e in range(epochs))
        lines.append(
            f"| {label} | {max(g.grad_norm_max for g in group):.3g} | "
            f"{sum(g.grad_spikes for g in group)} | "
            f"{_optional([g.gate_saturation for g in group], '{:.1%}')} | "
            f"{_optional([g.kernel_max_prob for g in group], '{:.2f}')} | {per_epoch} |"
        )
    return "\n".join(lines) + "\n"


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


def write_report(
    out_dir: Path,
    recipe: Recipe,
    results: list[MethodResult],
    latency_batch_size: int,
    device: torch.device,
    wall_seconds: float,
) -> Path:
    """Write ``results.json``, the PNG plots and ``report.md`` to ``out_dir``; returns the report's path."""
    rows = [mean_plot_row(group) for group in group_by_method(results)]
    seeds = max(len(group) for group in group_by_method(results))
    plot_speed_accuracy(rows, out_dir / PLOT_FILES["accuracy_vs_time"], x="time", time_unit="s/epoch")
    plot_speed_accuracy(rows, out_dir / PLOT_FILES["accuracy_vs_macs"], x="macs")
    # A method with top-1 = 0 has an infinite IES: it gets no bars rather than a misleading finite one.
    scored = [row for row in rows if math.isfinite(row["ies"])]
    unscored = [row["method"] for row in rows if not math.isfinite(row["ies"])]
    scores_note = f" No IES/RCS bars for {', '.join(unscored)} (top-1 = 0)." if unscored else ""
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
    results_json = {
        "recipe": recipe.to_dict(),
        "methods": [asdict(r) for r in results],
        "seeds": seeds,
        "latency_batch_size": latency_batch_size,
        "machine": machine,
        "machine_details": machine_record(device),
        "wall_seconds": wall_seconds,
    }
    write_text_atomic(out_dir / RESULTS_FILE, dumps_json(results_json, indent=2) + "\n")
    report = f"""# Dynamic convolutions compared on {recipe.dataset}

{recipe_summary(recipe)}. Machine: {machine}. Wall time of this `fmdconv compare` run
(training, evaluation and measurements): {wall_seconds / 60:.1f} min.

{markdown_table(results, latency_batch_size)}
- {seeds_note}Top-1 / top-5: final epoch, test split. Train time / epoch: mean wall time of the
  training part of an epoch. Latency: median of {LATENCY_REPEATS} forward passes in eval mode, per
  image. MACs per image follow `fmdconv.profiling` (static conv MACs plus attention and kernel aggregation).
- IES = (s per epoch) / top-1 (lower is better); RCS = top-1 / (s per epoch) (higher is better), the
  conventions of `fmdconv.metrics`. Times are comparable only on the same machine.{scores_note}

Training health (docs/training.md): the largest global gradient norm of a run and its gradient
spikes (steps above {SPIKE_FACTOR:g}x the recent level), the fraction of saturated sigmoid gates
(< {SATURATION_MARGIN:g} or > {1 - SATURATION_MARGIN:g}) and the mean largest kernel-softmax
probability (1/n uniform, 1 one-hot) at the last logged step, and the test top-1 after each epoch.

{health_table([(group[0].label, group) for group in group_by_method(results)])}

![Top-1 against training time per epoch]({PLOT_FILES["accuracy_vs_time"]})
![Top-1 against MACs per image]({PLOT_FILES["accuracy_vs_macs"]})
{scores_image}"""
    write_text_atomic(out_dir / REPORT_FILE, report)
    return out_dir / REPORT_FILE


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
            one, the runs go to ``out_dir/runs/<method>/seed<seed>/`` and the table shows mean ±
            standard deviation (``results.json`` keeps every run).

    Returns:
        One :class:`MethodResult` per method and seed: methods in order, each method's seeds in order.
    """
    methods = check_methods(methods)
    check_seeds(seeds)
    if (
        isinstance(latency_batch_size, bool)
        or not isinstance(latency_batch_size, int)
        or latency_batch_size < 1
    ):
        raise ValueError(f"latency_batch_size must be an int >= 1; got {latency_batch_size!r}")
    out_dir = Path(out_dir)
    torch_device = resolve_device(device)
    runs = [(method, recipe.seed + offset) for method in methods for offset in range(seeds)]
    run_dirs = {(method, seed): seed_run_dir(out_dir / "runs" / method, seed, seeds) for method, seed in runs}
    for (method, seed), run_dir in run_dirs.items():
        check_reusable(run_dir, method_recipe_of(recipe, method).replace(seed=seed))
    start = time.perf_counter()
    results = []
    for index, (method, seed) in enumerate(runs, 1):
        method_recipe = method_recipe_of(recipe, method).replace(seed=seed)
        run_dir = run_dirs[method, seed]
        if progress:
            print(f"[{index}/{len(runs)}] {METHOD_LABELS[method]} -> {run_dir}", file=sys.stderr)
        result = train(
            method_recipe,
            run_dir,
            resume=(run_dir / LAST_CHECKPOINT).exists(),
            device=torch_device,
            progress=progress,
            tensorboard=tensorboard,
        )
        results.append(
            measure_method(
                method,
                method_recipe,
                run_dir,
                torch_device,
                latency_batch_size,
                result.history,
                result.best_top1,
            )
        )
    wall_seconds = time.perf_counter() - start
    report = write_report(out_dir, recipe, results, latency_batch_size, torch_device, wall_seconds)
    if progress:
        print(f"wrote {report} ({wall_seconds / 60:.1f} min)", file=sys.stderr)
    return results
