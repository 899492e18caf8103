"""The speed benchmark: dynamic ResNets against the static one, side by side (``fmdconv bench``).

For each setting (architecture, stem, image size, batch size, mode; :mod:`.bench_settings`) every
variant is timed: the static network; each dynamic method at n = 1 and n = 4 with the automatic
formulation, and in some settings KernelWarehouse 1x and 4x and FDConv with 64 frequency groups;
FMDConv and ODConv with each exact formulation forced on every layer, so the automatic
choice can be checked against the fastest of them (:mod:`.bench_targets`); the same network computed
the naive way (every layer with the batch folded into the groups of one convolution and the channel
attentions applied to the feature maps, what the authors' code does); in some settings the
channels_last memory format, ``torch.compile`` (:data:`COMPILE_SETTINGS`), and the authors' own
FMDConv and ODConv ResNets where their code is given (:mod:`.authors_code`), in the same process.

The variants are timed in rounds, one iteration of each in turn
(:func:`fmdconv.utils.timing.time_interleaved`), so that a change in the machine's load hits all of
them alike; a first, untimed round measures each
variant's peak memory (:mod:`.probes`) and warms it up. All variants of a setting see the same random
batch. Each time is the median over the rounds, given with the range, and every ratio compares
medians of the same setting. The clock is the elapsed time, or, on a busy shared machine, the CPU
time of the calling thread (with one thread), which other processes cannot inflate. Before each
round the run can wait for other processes to go quiet; the CPU seconds they used while the rounds
ran are recorded with each setting. The results name the machine (:mod:`fmdconv.utils.machine`) and
are written as JSON and Markdown (:mod:`.bench_report`), by default into
``benchmarks/results/<machine>/``.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fmdconv.layers import DynamicConv2d, formulations
from fmdconv.models import create_model
from fmdconv.profiling import probes
from fmdconv.profiling.authors_code import build_authors_model, find_releases
from fmdconv.profiling.bench_report import to_markdown, write_result_files, write_results
from fmdconv.profiling.bench_settings import (
    AUTO,
    COMPILE_SETTINGS,
    DEFAULT_SETTINGS,
    FULL_SETTINGS,
    STATIC,
    Setting,
    Variant,
)
from fmdconv.profiling.bench_targets import evaluate_targets, formulation_choices
from fmdconv.utils.devices import resolve_device
from fmdconv.utils.machine import machine_record
from fmdconv.utils.timing import CLOCKS, time_interleaved

__all__ = [
    "COMPILE_SETTINGS",
    "DEFAULT_SETTINGS",
    "FULL_SETTINGS",
    "STATIC",
    "Setting",
    "Variant",
    "computed_as",
    "evaluate_targets",
    "measure_setting",
    "naive_formulation",
    "run_benchmark",
    "to_markdown",
    "write_result_files",
    "write_results",
]

Network = tuple[str, int, bool, bool]  # Variant.network


@contextlib.contextmanager
def computed_as(model: nn.Module, formulation: str, fold_attentions: bool = True) -> Iterator[None]:
    """Compute every dynamic layer of ``model`` with ``formulation`` (and the channel attentions
    folded into the kernels or not) for the duration of the block; each layer's own settings after."""
    layers = [m for m in model.modules() if isinstance(m, DynamicConv2d)]
    saved = [(layer.formulation, layer.fold_attentions) for layer in layers]
    for layer in layers:
        layer.formulation, layer.fold_attentions = formulation, fold_attentions
    try:
        yield
    finally:
        for layer, (previous, fold) in zip(layers, saved, strict=True):
            layer.formulation, layer.fold_attentions = previous, fold


def naive_formulation(model: nn.Module) -> contextlib.AbstractContextManager[None]:
    """Every dynamic layer the naive way: the batch folded into groups, the attentions on the maps."""
    return computed_as(model, "grouped", fold_attentions=False)


def _step(model: nn.Module, inputs: Tensor, mode: str) -> None:
    """One iteration: a training step (forward, mean of the logits, backward) or an inference pass."""
    if mode == "train":
        model(inputs).mean().backward()
        model.zero_grad(set_to_none=True)
    else:
        with torch.no_grad():
            model(inputs)


def _run_variant(model: nn.Module, inputs: Tensor, mode: str, variant: Variant) -> None:
    """One iteration of ``variant`` (switching a forced or naive variant's layers costs microseconds)."""
    if variant.naive:
        context = naive_formulation(model)
    elif variant.formulation != AUTO:
        context = computed_as(model, variant.formulation)
    else:
        context = contextlib.nullcontext()
    with context:
        _step(model, inputs, mode)


def _build(
    arch: str, stem: str, variant: Variant, device: torch.device, releases: dict[str, Path]
) -> nn.Module:
    """The eager network of ``variant`` (seeded, so every variant of a kind has the same weights)."""
    torch.manual_seed(0)
    num_classes = 10 if stem == "cifar" else 1000
    if variant.authors:
        model = build_authors_model(
            variant.conv, releases[variant.conv], arch, num_classes, variant.kernel_num
        )
    else:
        options: dict[str, int] = {}
        if variant.conv == "kw":
            options["kw_ratio"] = variant.kernel_num
        elif variant.conv != "static":
            options["kernel_num"] = variant.kernel_num
        model = create_model(arch, conv=variant.conv, num_classes=num_classes, stem=stem, **options)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if variant.channels_last else model


def skip_reason(
    variant: Variant, setting: Setting, device: torch.device, releases: dict[str, Path]
) -> str | None:
    """Why ``variant`` cannot be timed in ``setting`` on ``device`` (None: it can)."""
    if variant.authors and variant.conv not in releases:
        return f"the authors' {variant.conv} code was not given (--authors-code DIR)"
    if variant.authors and setting.stem != "imagenet":
        return "the authors' ResNets have the ImageNet stem only"
    probe = torch.zeros(1, device=device)
    if variant.formulation != AUTO and not formulations.formulation_available(variant.formulation, probe):
        return f"formulation {variant.formulation!r} is not available on {device.type}"
    return None


def measure_setting(
    setting: Setting,
    models: dict[Network, nn.Module],
    device: torch.device,
    clock: str = "wall",
    quiet_wait_s: float = 0.0,
) -> dict[str, Any]:
    """Time the variants of one setting side by side; ``models`` maps :attr:`Variant.network` to a network.

    Every variant sees the same random batch. Compiled variants are compiled (one untimed call) before
    the memory round, which also warms every variant up. Before each round it waits up to
    ``quiet_wait_s`` for the other processes to go quiet; the CPU time they use during the rounds is
    recorded.
    """
    if not setting.variants or setting.variants[0] != STATIC:
        raise ValueError(f"{setting.name}: the first variant must be static, the reference of every ratio")
    inputs = torch.randn(setting.batch_size, 3, setting.image_size, setting.image_size, device=device)
    runs = {}
    for variant in setting.variants:
        model: nn.Module = models[variant.network].train(setting.mode == "train")
        batch = inputs.contiguous(memory_format=torch.channels_last) if variant.channels_last else inputs
        if variant.compiled:
            model = torch.compile(model)
        runs[variant] = partial(_run_variant, model, batch, setting.mode, variant)
        if variant.compiled:
            runs[variant]()
    waited = probes.wait_for_quiet(quiet_wait_s)
    start = probes.cpu_jiffies()
    memory = {variant: probes.peak_memory_mib(run, device) for variant, run in runs.items()}
    others = [probes.other_processes_cpu(start)]
    readings: list[tuple[int, int] | None] = []

    def before_round(index: int) -> None:
        nonlocal waited
        if readings:
            others.append(probes.other_processes_cpu(readings[-1]))
        waited += probes.wait_for_quiet(quiet_wait_s)
        readings.append(probes.cpu_jiffies())

    times = time_interleaved(
        runs, setting.repeats, device, warmup=0, clock=CLOCKS[clock], before_round=before_round
    )
    others.append(probes.other_processes_cpu(readings[-1]))
    static = statistics.median(times[STATIC])
    rows = []
    for variant, values in times.items():
        median = statistics.median(values)
        rows.append(
            {
                "variant": variant.name,
                "method": variant.method,
                **asdict(variant),
                "median_s": median,
                "min_s": min(values),
                "max_s": max(values),
                "times_s": values,
                "relative_to_static": median / static,
                "peak_memory_mib": memory[variant],
            }
        )
    return {
        "setting": setting.name,
        **{key: value for key, value in asdict(setting).items() if key != "variants"},
        "other_processes_cpu_s": None if any(o is None for o in others) else sum(filter(None, others)),
        "waited_for_quiet_s": waited,
        "results": rows,
        "formulation_choices": formulation_choices(rows),
    }


def run_benchmark(
    settings: Sequence[Setting] = DEFAULT_SETTINGS,
    device: str | torch.device = "cpu",
    threads: int = 2,
    progress: Callable[[str], None] | None = None,
    quiet_wait_s: float = 0.0,
    clock: str = "wall",
    authors_code: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Measure every setting; returns the JSON-ready results (see the module docstring).

    The networks are built once per architecture and stem, each from the same seed.
    ``quiet_wait_s``: before each round, wait up to this long for other processes to go quiet.
    ``clock``: ``"wall"`` (elapsed time) or ``"cpu"`` (CPU time of the calling thread: immune to
    other processes, valid with ``threads=1`` on CPU only). ``authors_code``: folders of the authors'
    releases (:mod:`.authors_code`); the authors' variants of a setting are skipped, with the reason
    in ``"skipped"``, where their code is not given or does not apply.
    """
    device = resolve_device(device)
    if isinstance(quiet_wait_s, bool) or not isinstance(quiet_wait_s, int | float) or not quiet_wait_s >= 0:
        raise ValueError(f"quiet_wait_s must be a number of seconds >= 0, got {quiet_wait_s!r}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    if clock == "cpu" and (threads != 1 or device.type != "cpu"):
        raise ValueError("clock='cpu' measures one thread: use it with threads=1 on the CPU")
    releases = find_releases(authors_code)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    machine = machine_record(device)
    started = time.perf_counter()
    measured, skipped = [], []
    try:
        groups: dict[tuple[str, str], list[Setting]] = {}
        for setting in settings:
            groups.setdefault((setting.arch, setting.stem), []).append(setting)
        for (arch, stem), group in groups.items():
            models: dict[Network, nn.Module] = {}
            for setting in group:
                variants = []
                for variant in setting.variants:
                    reason = skip_reason(variant, setting, device, releases)
                    if reason is None:
                        variants.append(variant)
                    else:
                        skipped.append({"setting": setting.name, "variant": variant.name, "reason": reason})
                for variant in variants:
                    if variant.network not in models:
                        models[variant.network] = _build(arch, stem, variant, device, releases)
                if progress is not None:
                    progress(f"{setting.name}: {len(variants)} variants, {setting.repeats + 1} rounds")
                runnable = replace(setting, variants=tuple(variants))
                measured.append(measure_setting(runnable, models, device, clock, quiet_wait_s))
            del models
    finally:
        torch.set_num_threads(previous_threads)
    if progress is not None:
        for reasons in dict.fromkeys((s["variant"], s["reason"]) for s in skipped):
            progress(f"skipped {reasons[0]}: {reasons[1]}")
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "device_type": device.type,
        "threads": threads,
        "clock": clock,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dtype": "float32",
        "wall_s": time.perf_counter() - started,
        "quiet_wait_s": quiet_wait_s,
        "authors_code": {kind: str(folder) for kind, folder in releases.items()},
        "settings": measured,
        "skipped": skipped,
        "targets": evaluate_targets(measured),
    }
