"""Ablations of a dynamic model: one training per value of one factor (the FMDConv paper's Figure 5).

:func:`ablate` trains ``recipe`` once per value of a factor, everything else equal, into
``out_dir/runs/<factor>-<value>/`` (through :class:`fmdconv.train.Trainer`), and writes to ``out_dir``:

- ``report.md``: the recipe, the results table and the plot;
- ``results.json``: the same numbers in full precision, with the recipe, machine and wall time;
- ``ablation.png``: top-1 and top-5 against the factor, side by side (Figure 5).

The factors (:data:`~fmdconv.experiments.factors.FACTORS`: ``temperature``, ``kernel_num``,
``schedule``, ``attentions``), their values and the checks that one changes something are in
:mod:`fmdconv.experiments.factors`. Checkpoints do not record the attentions an ``attentions`` run
switched off: evaluate such a checkpoint with the same attentions switched off.

With ``seeds=N`` (N > 1) each value trains N times, with seeds ``recipe.seed`` ... ``recipe.seed + N - 1``,
into ``out_dir/runs/<factor>-<value>/seed<seed>/``; for ``attentions`` each seed's model trains and
is evaluated with the same attentions switched off. The table then shows top-1, top-5 and best top-1
as mean ± sample standard deviation over the seeds (train time: mean), the plot the means, and
``results.json`` every run with its seed, as ``fmdconv compare --seeds`` does. The runs go through
the sweep engine (:mod:`fmdconv.experiments.sweep`), as ``fmdconv compare``'s do: resumed, reused
when finished, refused when of another recipe, and a failed row when diverged.

Conventions are those of ``fmdconv compare``: top-1 and top-5 are the final epoch's on the recipe's
test split, train time per epoch is the mean wall time of the training part of an epoch. Every file
is written atomically.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fmdconv.experiments.factors import (
    Factor,
    Value,
    ablation_values,
    keep_attentions,
    warn_if_annealed_at_once,
)
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
from fmdconv.train import Trainer
from fmdconv.train.recipe import Recipe
from fmdconv.utils.devices import resolve_device
from fmdconv.utils.io import dumps_json, write_text_atomic
from fmdconv.viz import plot_ablation

REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"
PLOT_FILE = "ablation.png"


@dataclass(frozen=True)
class AblationResult(RunOutcome):
    """The outcome of one run: one value of the factor, one seed (its run, seed, failure and
    training health: :class:`~fmdconv.experiments.sweep.RunOutcome`).

    Attributes:
        value: the factor's value.
        top1, top5: final test accuracies in [0, 1]; ``best_top1`` the best over the epochs, reached
            at ``best_epoch``.
        epochs: epochs trained (of a failed run: the epochs it finished).
        seconds_per_epoch: mean training wall time per epoch.
        run_seconds: wall time of the whole run, training, BatchNorm re-estimation and evaluation of
            every epoch (also when the run was finished earlier and is reused).

    A failed run has ``top1``, ``top5``, ``best_top1``, ``best_epoch`` and ``seconds_per_epoch``
    None, and ``run_seconds`` 0.
    """

    value: Value
    top1: float | None
    top5: float | None
    best_top1: float | None
    best_epoch: int | None
    epochs: int
    seconds_per_epoch: float | None
    run_seconds: float


def _failed_value(run: Run, failure: str) -> AblationResult:
    """The result of a run that stopped on a non-finite value: no accuracy, no time."""
    health = failed_run_health(run.run_dir)
    return AblationResult(
        value=run.setting,
        top1=None,
        top5=None,
        best_top1=None,
        best_epoch=None,
        epochs=len(health["epoch_top1"]),
        seconds_per_epoch=None,
        run_seconds=0.0,
        run_dir=str(run.run_dir),
        seed=run.recipe.seed,
        failure=failure,
        **health,
    )


def ablate(
    recipe: Recipe,
    factor: str,
    out_dir: str | Path,
    values: Sequence[Any] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    tensorboard: bool = False,
    seeds: int = 1,
) -> list[AblationResult]:
    """Train ``recipe`` once per value of ``factor`` (and seed) and write the report to ``out_dir``.

    Args:
        recipe: the shared settings; the factor's own setting is replaced per run.
        factor: one of :data:`~fmdconv.experiments.factors.FACTORS`.
        out_dir: report folder; the runs go to ``out_dir/runs/<factor>-<value>/``. Runs already there
            are resumed (finished ones reused); one with a different recipe raises a ValueError.
        values: the values to try (text or values; see the module docstring), in the order of the
            table; ``None`` for the factor's defaults.
        device: where to train (default: CUDA if available).
        progress: draw progress bars and a line per run on stderr.
        tensorboard: also write TensorBoard scalars for each run.
        seeds: runs per value, with seeds ``recipe.seed``, ``recipe.seed + 1``, ...; with more than
            one, the runs go to ``out_dir/runs/<factor>-<value>/seed<seed>/`` and the table shows
            mean ± standard deviation (``results.json`` keeps every run).

    Returns:
        One :class:`AblationResult` per value and seed: values in order, each value's seeds in order;
        a run that stopped on a non-finite loss or non-finite outputs gives a failed one.

    Warns:
        UserWarning: a temperature ablation whose annealing is over by the first iteration.
    """
    spec, chosen = ablation_values(factor, recipe, values)
    out_dir = Path(out_dir)
    torch_device = resolve_device(device)
    settings = [
        (
            value,
            f"{spec.name} = {value}",
            recipe if spec.setting is None else recipe.replace(**{spec.setting: value}),
            out_dir / "runs" / f"{spec.name}-{value}",
        )
        for value in chosen
    ]
    runs = plan_runs(settings, seeds)

    def train_value(run: Run) -> AblationResult:
        trainer = Trainer(
            run.recipe,
            run.run_dir,
            resume=run.resume,
            device=torch_device,
            progress=progress,
            tensorboard=tensorboard,
        )
        if run is runs[0]:
            warn_if_annealed_at_once(spec, run.recipe, trainer.iters_per_epoch)
        if spec.name == "attentions":
            keep_attentions(trainer.model, str(run.setting))
        outcome = trainer.run()
        final = outcome.final
        return AblationResult(
            value=run.setting,
            top1=final["test_top1"],
            top5=final["test_top5"],
            best_top1=outcome.best_top1,
            best_epoch=outcome.best_epoch,
            epochs=final["epoch"],
            seconds_per_epoch=outcome.seconds_per_epoch,
            run_seconds=sum(
                record["train_seconds"] + record.get("precise_bn_seconds", 0.0) + record["eval_seconds"]
                for record in outcome.history
            ),
            run_dir=str(run.run_dir),
            seed=run.recipe.seed,
            **run_health(outcome.history),
        )

    results, wall_seconds = run_sweep(runs, train_value, _failed_value, progress)
    report = write_ablation_report(
        out_dir, spec, recipe, results, machine_description(torch_device), wall_seconds
    )
    if progress:
        print(f"wrote {report} ({wall_seconds / 60:.1f} min)", file=sys.stderr)
    return results


def group_by_value(results: Sequence[AblationResult]) -> list[list[AblationResult]]:
    """The results grouped per value (one list per value, its seeds in order), values in order."""
    return group_runs(results, key=lambda result: result.value)


def markdown_table(factor: Factor, results: Sequence[AblationResult]) -> str:
    """The results table in Markdown, one row per value: mean ± std over its seeds where it has several.

    With one seed the best top-1 shows the epoch reaching it; with several, mean ± std of the best
    top-1 (no epoch). Train time per epoch: mean over the seeds. A value with a failed run shows
    ``failed`` instead of its accuracies.
    """
    groups = group_by_value(results)
    single = all(len(group) == 1 for group in groups)
    best_header = "Best top-1 (epoch)" if single else "Best top-1"
    lines = [
        f"| {factor.label} | Top-1 | Top-5 | {best_header} | Train time / epoch |",
        "|---|---:|---:|---:|---:|",
    ]
    for group in groups:
        failed = failed_text(group)
        if failed is not None:
            lines.append(f"| {group[0].value} | **{failed}** | **{failed}** | - | - |")
            continue
        best = percent_mean_std([r.best_top1 for r in group])
        if len(group) == 1:
            best += f" ({group[0].best_epoch})"
        seconds = mean_std([r.seconds_per_epoch for r in group])[0]
        lines.append(
            f"| {group[0].value} | {percent_mean_std([r.top1 for r in group])} | "
            f"{percent_mean_std([r.top5 for r in group])} | {best} | {seconds:.1f} s |"
        )
    return "\n".join(lines) + "\n"


def write_ablation_report(
    out_dir: Path,
    factor: Factor,
    recipe: Recipe,
    results: Sequence[AblationResult],
    machine: str,
    wall_seconds: float,
) -> Path:
    """Write ``ablation.png``, ``results.json`` and ``report.md`` to ``out_dir``; returns the report path.

    The plot shows each value's mean over its seeds (values with a failed run left out);
    ``results.json`` keeps every run.
    """
    groups = group_by_value(results)
    seeds = max(len(group) for group in groups)
    rows = [
        {
            factor.name: group[0].value,
            "top1": mean_std([r.top1 for r in group])[0],
            "top5": mean_std([r.top5 for r in group])[0],
        }
        for group in groups
        if failed_text(group) is None
    ]
    plot = ""
    if rows:  # none when every run failed
        plot_ablation(rows, factor.name, out_dir / PLOT_FILE, factor_label=factor.label)
        plot = f"![Top-1 and top-5 against {factor.label.lower()}]({PLOT_FILE})\n"
    summary = {
        "factor": factor.name,
        "setting": factor.setting,
        "recipe": recipe.to_dict(),
        "results": [asdict(r) for r in results],
        "seeds": seeds,
        "failed_runs": sum(r.failed for r in results),
        "machine": machine,
        "wall_seconds": wall_seconds,
    }
    write_text_atomic(out_dir / RESULTS_FILE, dumps_json(summary, indent=2) + "\n")
    run_minutes = sum(r.run_seconds for r in results) / 60
    varied = (
        f"recipe setting `{factor.setting}`" if factor.setting else "attentions switched off in every layer"
    )
    seeds_note = (
        f"{seeds} seeds per value (seed {results[0].seed} on): mean ± standard deviation over seeds "
        "(train time: mean; best top-1 without its epoch); the plot shows the means. "
        if seeds > 1
        else ""
    )
    report = f"""# Ablation of {factor.label.lower()} on {recipe.dataset}

Base recipe: {recipe_summary(recipe)}. Varied: {factor.label.lower()} ({varied}); everything else
equal. Machine: {machine}. Training and evaluation took {run_minutes:.1f} min in all (summed over the
runs); this `fmdconv ablate` call took {wall_seconds / 60:.1f} min (finished runs are reused).

{markdown_table(factor, results)}
- {seeds_note}Top-1 / top-5: final epoch, test split; best top-1 over the epochs with its epoch. Train time /
  epoch: mean wall time of the training part of an epoch (times compare only on one machine).

## Training health

{health_section([(str(group[0].value), group) for group in groups], factor.label)}
{plot}"""
    write_text_atomic(out_dir / REPORT_FILE, report)
    return out_dir / REPORT_FILE
