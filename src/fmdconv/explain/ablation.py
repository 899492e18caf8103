"""Ablations of a dynamic model: one training per value of one factor (the FMDConv paper's Figure 5).

:func:`ablate` trains ``recipe`` once per value of a factor, everything else equal, into
``out_dir/runs/<factor>-<value>/`` (through :class:`fmdconv.train.Trainer`), and writes to ``out_dir``:

- ``report.md``: the recipe, the results table and the plot;
- ``results.json``: the same numbers in full precision, with the recipe, machine and wall time;
- ``ablation.png``: top-1 and top-5 against the factor, side by side (Figure 5).

Factors (:data:`FACTORS`):

``temperature``
    the initial kernel temperature (recipe ``kernel_temperature_start``); the authors' study used
    34 (their code's default), 40, 52, 61 and 100 on CIFAR-100.
``kernel_num``
    the number of kernels n of every dynamic convolution.
``schedule``
    the kernel-temperature schedule (recipe ``kernel_temperature``): ``degraded`` (the paper),
    ``constant`` (the authors' released code), ``step`` (the DyConv code).
``attentions``
    the attentions kept: ``all``, ``none``, or names joined by ``+`` (``input+output``). The others
    are switched off with :func:`fmdconv.layers.set_attentions` (counting as 1) for the whole run,
    training and evaluation. Checkpoints do not record this switch: evaluate such a checkpoint
    with the same attentions switched off.

With ``seeds=N`` (N > 1) each value trains N times, with seeds ``recipe.seed`` ... ``recipe.seed + N - 1``,
into ``out_dir/runs/<factor>-<value>/seed<seed>/``; for ``attentions`` each seed's model trains and
is evaluated with the same attentions switched off. The table then shows top-1, top-5 and best top-1
as mean ± sample standard deviation over the seeds (train time: mean), the plot the means, and
``results.json`` every run with its seed, as ``fmdconv compare --seeds`` does.

Conventions are those of ``fmdconv compare``: top-1 and top-5 are the final epoch's on the recipe's
test split, train time per epoch is the mean wall time of the training part of an epoch. Runs already
in ``out_dir`` are resumed (finished ones reused), so an interrupted ablation continues where it
stopped. Every file is written atomically.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fmdconv.explain.attention_cam import model_attentions
from fmdconv.layers import ATTENTION_NAMES, set_attentions
from fmdconv.layers.temperature import KERNEL_MODES
from fmdconv.train.checkpoint import LAST_CHECKPOINT
from fmdconv.train.compare import (
    check_reusable,
    check_seeds,
    health_table,
    machine_description,
    mean_std,
    percent_mean_std,
    recipe_summary,
    run_health,
    seed_run_dir,
)
from fmdconv.train.construction import build_model
from fmdconv.train.distributed import unwrap
from fmdconv.train.health import SATURATION_MARGIN, SPIKE_FACTOR
from fmdconv.train.recipe import Recipe
from fmdconv.train.trainer import Trainer
from fmdconv.utils.devices import resolve_device
from fmdconv.utils.io import dumps_json, write_text_atomic
from fmdconv.viz import plot_ablation

REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"
PLOT_FILE = "ablation.png"
ALL_KEPT = "all"
NONE_KEPT = "none"
# Initial kernel temperatures of the FMDConv authors' study (Figure 5).
AUTHORS_TEMPERATURES = (34, 40, 52, 61, 100)
# Methods whose kernel attention is a softmax divided by a temperature.
TEMPERATURE_METHODS = ("dy", "od", "fmd")

Value = int | float | str


@dataclass(frozen=True)
class Factor:
    """One thing an ablation varies.

    Attributes:
        name: the factor's name on the command line and in the results.
        label: axis and column label.
        setting: the recipe field it sets; ``None`` for ``attentions`` (switched on the model).
        defaults: the values tried when none are given, for a recipe (the attentions to keep depend
            on the model's method).
        parse: turns one value (given as text or as a value) into the value used, or raises
            ValueError.
    """

    name: str
    label: str
    setting: str | None
    defaults: Callable[[Recipe], tuple[Value, ...]]
    parse: Callable[[Any], Value]


def _temperature(value: Any) -> Value:
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise ValueError(f"a temperature must be a finite number > 0; got {value!r}")
    return int(number) if number.is_integer() else number


def _kernel_num(value: Any) -> Value:
    number = int(value)
    if number < 1 or number != float(value):
        raise ValueError(f"kernel_num must be an int >= 1; got {value!r}")
    return number


def _schedule(value: Any) -> Value:
    if value not in KERNEL_MODES:
        raise ValueError(f"schedule must be one of {', '.join(KERNEL_MODES)}; got {value!r}")
    return str(value)


def _attentions(value: Any) -> Value:
    text = str(value)
    if text in (ALL_KEPT, NONE_KEPT):
        return text
    names = text.split("+")
    if any(name not in ATTENTION_NAMES for name in names) or len(set(names)) != len(names):
        raise ValueError(
            f"attentions must be '{ALL_KEPT}', '{NONE_KEPT}' or distinct names among "
            f"{', '.join(ATTENTION_NAMES)} joined by '+'; got {value!r}"
        )
    return "+".join(name for name in ATTENTION_NAMES if name in names)


def _attention_choices(recipe: Recipe) -> tuple[Value, ...]:
    """All attentions, each attention of the recipe's model alone, and none."""
    return (ALL_KEPT, *model_attentions(build_model(recipe)), NONE_KEPT)


FACTORS: dict[str, Factor] = {
    factor.name: factor
    for factor in (
        Factor(
            "temperature",
            "Initial kernel temperature",
            "kernel_temperature_start",
            lambda recipe: AUTHORS_TEMPERATURES,
            _temperature,
        ),
        Factor("kernel_num", "Number of kernels n", "kernel_num", lambda recipe: (1, 2, 4, 8), _kernel_num),
        Factor(
            "schedule",
            "Kernel temperature schedule",
            "kernel_temperature",
            lambda recipe: KERNEL_MODES,
            _schedule,
        ),
        Factor("attentions", "Attentions kept", None, _attention_choices, _attentions),
    )
}


@dataclass(frozen=True)
class AblationResult:
    """The outcome of one run: one value of the factor, one seed.

    Attributes:
        value: the factor's value.
        top1, top5: final test accuracies in [0, 1]; ``best_top1`` the best over the epochs, reached
            at ``best_epoch``.
        epochs: epochs trained.
        seconds_per_epoch: mean training wall time per epoch.
        run_seconds: wall time of the whole run, training, BatchNorm re-estimation and evaluation of
            every epoch (also when the run was finished earlier and is reused).
        run_dir: the run's folder (``last.pt``, ``best.pt``, ``metrics.jsonl``).
        seed: the run's seed (``ablate(seeds=N)`` trains seeds ``recipe.seed`` ... ``+ N - 1``).
        grad_norm_max, grad_spikes, gate_saturation, kernel_max_prob, epoch_top1: the run's training
            health, as in :class:`~fmdconv.train.compare.MethodResult`.
    """

    value: Value
    top1: float
    top5: float
    best_top1: float
    best_epoch: int
    epochs: int
    seconds_per_epoch: float
    run_seconds: float
    run_dir: str
    seed: int
    grad_norm_max: float = 0.0
    grad_spikes: int = 0
    gate_saturation: float | None = None
    kernel_max_prob: float | None = None
    epoch_top1: tuple[float, ...] = ()


def ablation_values(
    factor: str, recipe: Recipe, values: Sequence[Any] | None = None
) -> tuple[Factor, tuple[Value, ...]]:
    """The :class:`Factor` called ``factor`` and the values to try with ``recipe``.

    Args:
        factor: one of :data:`FACTORS`.
        recipe: the base recipe (its method decides which values make sense).
        values: values as text or values; ``None`` for the factor's defaults.

    Raises:
        ValueError: an unknown factor, a factor that changes nothing for ``recipe``'s model, a bad
            value (or an attention the model lacks), fewer than two values, or a repeated one.
    """
    if factor not in FACTORS:
        raise ValueError(f"factor must be one of {', '.join(FACTORS)}; got {factor!r}")
    spec = FACTORS[factor]
    _check_recipe(spec, recipe)
    if values is None:
        return spec, spec.defaults(recipe)
    parsed = []
    for value in values:
        try:
            parsed.append(spec.parse(value))
        except (TypeError, ValueError) as error:
            raise ValueError(f"values of {factor}: {error}") from None
    if len(parsed) < 2 or len(set(map(str, parsed))) != len(parsed):
        raise ValueError(f"values of {factor} must be at least two distinct values; got {list(values)}")
    if spec.name == "attentions":
        available = model_attentions(build_model(recipe))
        lacking = {name for kept in parsed for name in _kept_names(str(kept), available)} - set(available)
        if lacking:
            raise ValueError(
                f"values of attentions name {', '.join(sorted(lacking))}, which a {recipe.conv} model "
                f"lacks; it has {', '.join(available)}"
            )
    return spec, tuple(parsed)


def _check_recipe(factor: Factor, recipe: Recipe) -> None:
    """Raise a ValueError if varying ``factor`` would change nothing in a model of ``recipe``."""
    if recipe.conv == "static":
        raise ValueError(f"the {factor.name} ablation needs a dynamic conv (recipe conv is 'static')")
    if factor.name in ("temperature", "schedule"):
        if recipe.conv not in TEMPERATURE_METHODS:
            raise ValueError(
                f"the {factor.name} ablation needs a conv with a kernel temperature "
                f"({', '.join(TEMPERATURE_METHODS)}); got conv {recipe.conv!r}"
            )
        if recipe.kernel_num < 2:
            raise ValueError(
                f"the {factor.name} ablation needs kernel_num >= 2 (one kernel has no kernel attention)"
            )


def _kept_names(kept: str, available: Sequence[str]) -> tuple[str, ...]:
    """The attention names an ``attentions`` value keeps."""
    if kept == ALL_KEPT:
        return tuple(available)
    return () if kept == NONE_KEPT else tuple(kept.split("+"))


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
        factor: one of :data:`FACTORS`.
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
        One :class:`AblationResult` per value and seed: values in order, each value's seeds in order.
    """
    spec, chosen = ablation_values(factor, recipe, values)
    check_seeds(seeds)
    out_dir = Path(out_dir)
    torch_device = resolve_device(device)
    runs = [
        (
            value,
            seed_run_dir(out_dir / "runs" / f"{spec.name}-{value}", seed, seeds),
            (recipe if spec.setting is None else recipe.replace(**{spec.setting: value})).replace(seed=seed),
        )
        for value in chosen
        for seed in range(recipe.seed, recipe.seed + seeds)
    ]
    for _, run_dir, run_recipe in runs:
        check_reusable(run_dir, run_recipe)
    start = time.perf_counter()
    results = []
    for index, (value, run_dir, run_recipe) in enumerate(runs, 1):
        if progress:
            seed_note = f" (seed {run_recipe.seed})" if seeds > 1 else ""
            print(f"[{index}/{len(runs)}] {spec.name} = {value}{seed_note} -> {run_dir}", file=sys.stderr)
        trainer = Trainer(
            run_recipe,
            run_dir,
            resume=(run_dir / LAST_CHECKPOINT).exists(),
            device=torch_device,
            progress=progress,
            tensorboard=tensorboard,
        )
        if spec.name == "attentions":
            _keep_attentions(trainer.model, str(value))
        outcome = trainer.run()
        final = outcome.final
        results.append(
            AblationResult(
                value=value,
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
                run_dir=str(run_dir),
                seed=run_recipe.seed,
                **run_health(outcome.history),
            )
        )
    wall_seconds = time.perf_counter() - start
    report = write_ablation_report(
        out_dir, spec, recipe, results, machine_description(torch_device), wall_seconds
    )
    if progress:
        print(f"wrote {report} ({wall_seconds / 60:.1f} min)", file=sys.stderr)
    return results


def _keep_attentions(model: torch.nn.Module, kept: str) -> None:
    """Switch off every attention of ``model`` that ``kept`` (``all``, ``none`` or ``a+b``) leaves out."""
    names = _kept_names(kept, ATTENTION_NAMES)
    set_attentions(unwrap(model), **{name: name in names for name in ATTENTION_NAMES})


def group_by_value(results: Sequence[AblationResult]) -> list[list[AblationResult]]:
    """The results grouped per value (one list per value, its seeds in order), values in order."""
    return [list(group) for _, group in itertools.groupby(results, key=lambda result: result.value)]


def markdown_table(factor: Factor, results: Sequence[AblationResult]) -> str:
    """The results table in Markdown, one row per value: mean ± std over its seeds where it has several.

    With one seed the best top-1 shows the epoch reaching it; with several, mean ± std of the best
    top-1 (no epoch). Train time per epoch: mean over the seeds.
    """
    groups = group_by_value(results)
    single = all(len(group) == 1 for group in groups)
    best_header = "Best top-1 (epoch)" if single else "Best top-1"
    lines = [
        f"| {factor.label} | Top-1 | Top-5 | {best_header} | Train time / epoch |",
        "|---|---:|---:|---:|---:|",
    ]
    for group in groups:
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

    The plot shows each value's mean over its seeds; ``results.json`` keeps every run.
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
    ]
    plot_ablation(rows, factor.name, out_dir / PLOT_FILE, factor_label=factor.label)
    summary = {
        "factor": factor.name,
        "setting": factor.setting,
        "recipe": recipe.to_dict(),
        "results": [asdict(r) for r in results],
        "seeds": seeds,
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

{health_table([(str(group[0].value), group) for group in groups], first_column=factor.label)}
- Max grad norm: the largest global gradient norm of any step; grad spikes: steps above
  {SPIKE_FACTOR:g}x the recent level (docs/training.md). Saturated gates: sigmoid gates below
  {SATURATION_MARGIN:g} or above {1 - SATURATION_MARGIN:g}; kernel max-prob: mean largest
  kernel-softmax probability (1/n uniform), both at the last logged step.

![Top-1 and top-5 against {factor.label.lower()}]({PLOT_FILE})
"""
    write_text_atomic(out_dir / REPORT_FILE, report)
    return out_dir / REPORT_FILE
