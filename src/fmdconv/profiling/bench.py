"""The speed benchmark: dynamic ResNets against the static one, side by side (``fmdconv bench``).

For each setting (architecture, stem, image size, batch size, mode) every variant is timed: the
static network; each dynamic method at n = 1 and n = 4 with the automatic formulation; and the same
dynamic network computed the naive way, every layer with the batch folded into the groups of one
convolution and the channel attentions applied to the feature maps (what the authors' code does).
Some settings also time the static and FMDConv networks in the channels_last memory format (weights
and inputs); :data:`COMPILE_SETTINGS` times them compiled (``torch.compile``, compiled before the
warm-up round).
The variants are timed in rounds, one iteration of each in turn, so that a change in the machine's
load hits all of them alike; the first round is a warm-up. All variants of a setting see the same
random batch. Each time is the median over the rounds, given with the range, and every ratio
compares medians of the same setting. The clock is the elapsed time, or, on a busy shared machine,
the CPU time of the calling thread (with one thread), which other processes cannot inflate.

Peak memory is the most memory one iteration adds to what the process already holds (models and
inputs excluded), taken during the warm-up round. On CUDA it is ``torch.cuda.max_memory_allocated``.
On CPU, where torch's allocator keeps no statistics and ``tracemalloc`` does not see its buffers, it
is the peak resident set size (``VmHWM`` of ``/proc/self/status``, reset through
``/proc/self/clear_refs``) minus the resident size just before, after ``malloc_trim`` has returned
freed heap memory to the system; it includes everything the iteration touches (activations,
gradients, per-sample kernels, oneDNN workspaces). Without ``/proc`` it is not measured.

Before each round the run can wait for other processes to go quiet; the CPU seconds they used
while the rounds ran are recorded with each setting, because a timing taken on a busy machine
means less.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fmdconv.layers import KERNEL_MIXTURES, DynamicConv2d
from fmdconv.models import create_model
from fmdconv.utils.devices import resolve_device
from fmdconv.utils.io import write_text_atomic

# "cpu": the calling thread's CPU time, which other processes cannot inflate; exact with 1 thread only.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


@dataclass(frozen=True)
class Variant:
    """A network of the benchmark: ``conv`` kind, kernel number, and how it is computed.

    ``naive``: every dynamic layer the naive way; ``compiled``: through ``torch.compile``;
    ``channels_last``: weights and inputs in the channels_last memory format.
    """

    conv: str
    kernel_num: int = 1
    naive: bool = False
    compiled: bool = False
    channels_last: bool = False

    @property
    def name(self) -> str:
        name = "static" if self.conv == "static" else f"{self.conv} n={self.kernel_num}"
        flags = (("naive", self.naive), ("compiled", self.compiled), ("channels_last", self.channels_last))
        return " ".join([name, *(flag for flag, on in flags if on)])

    @property
    def network(self) -> tuple[str, int, bool]:
        """What identifies the network object itself (a compiled variant wraps the eager one)."""
        return self.conv, self.kernel_num, self.channels_last


STATIC = Variant("static")
ALL_VARIANTS: tuple[Variant, ...] = (
    STATIC,
    *(Variant(kind, n, naive) for n in (1, 4) for naive in (False, True) for kind in KERNEL_MIXTURES),
)


@dataclass(frozen=True)
class Setting:
    """One measured situation: ``repeats`` timed rounds of ``variants`` after one warm-up round."""

    arch: str
    stem: str
    image_size: int
    batch_size: int
    mode: str
    repeats: int
    variants: tuple[Variant, ...] = ALL_VARIANTS

    @property
    def name(self) -> str:
        return f"{self.arch} {self.stem} {self.image_size}px b{self.batch_size} {self.mode}"


def _full_grid(arch: str, rounds: tuple[int, int, int]) -> list[Setting]:
    """The issue's five settings with every variant; ``rounds`` at batch 1, 64 (CIFAR) and 32 (ImageNet)."""
    one, cifar, imagenet = rounds
    return [
        Setting(arch, "cifar", 32, 64, "train", cifar),
        Setting(arch, "cifar", 32, 64, "inference", cifar),
        Setting(arch, "imagenet", 224, 1, "inference", one),
        Setting(arch, "imagenet", 224, 32, "train", imagenet),
        Setting(arch, "imagenet", 224, 32, "inference", imagenet),
    ]


# Every variant everywhere: over an hour on 2 CPU cores.
FULL_SETTINGS: tuple[Setting, ...] = (
    *_full_grid("resnet18", (10, 2, 1)),
    *_full_grid("resnet50", (10, 1, 1)),
)

# About 14 minutes on 2 quiet CPU cores (820 s measured). The naive computation of a training step
# (5-10x a static one) is timed only for the two methods the FMDConv paper compares; the slower
# settings keep the lean list; ResNet-50 is timed in inference only (a ResNet-50 training step at
# 224x224, batch 32, takes about 10 s static and up to a minute dynamic: FULL_SETTINGS has it).
_TRAINING = (
    *(v for v in ALL_VARIANTS if not v.naive),
    Variant("od", 4, naive=True),
    Variant("fmd", 4, naive=True),
)
_LEAN = (
    STATIC,
    Variant("od", 1),
    Variant("fmd", 1),
    Variant("od", 4),
    Variant("fmd", 4),
    Variant("fmd", 4, True),
)
_CHANNELS_LAST = (Variant("static", channels_last=True), Variant("fmd", 4, channels_last=True))
DEFAULT_SETTINGS: tuple[Setting, ...] = (
    Setting("resnet18", "cifar", 32, 64, "train", 3, _TRAINING + _CHANNELS_LAST),
    Setting("resnet18", "cifar", 32, 64, "inference", 2),
    Setting("resnet18", "imagenet", 224, 1, "inference", 30, ALL_VARIANTS + _CHANNELS_LAST),
    Setting("resnet18", "imagenet", 224, 32, "train", 1, _LEAN),
    Setting("resnet18", "imagenet", 224, 32, "inference", 2, _LEAN),
    Setting("resnet50", "cifar", 32, 64, "inference", 2, _LEAN),
    Setting("resnet50", "imagenet", 224, 1, "inference", 5, _LEAN),
    Setting("resnet50", "imagenet", 224, 32, "inference", 1, _LEAN),
)

# torch.compile (``fmdconv bench --compile``), kept apart because compiling a network takes minutes on
# 2 CPU cores.
_COMPILED = (STATIC, Variant("fmd", 4), Variant("static", compiled=True), Variant("fmd", 4, compiled=True))
COMPILE_SETTINGS: tuple[Setting, ...] = (
    Setting("resnet18", "cifar", 32, 64, "train", 3, _COMPILED),
    Setting("resnet18", "imagenet", 224, 1, "inference", 30, _COMPILED),
)


@contextmanager
def naive_formulation(model: nn.Module) -> Iterator[None]:
    """Compute every dynamic layer of ``model`` the naive way for the duration of the block."""
    layers = [m for m in model.modules() if isinstance(m, DynamicConv2d)]
    saved = [(layer.formulation, layer.fold_attentions) for layer in layers]
    for layer in layers:
        layer.formulation, layer.fold_attentions = "grouped", False
    try:
        yield
    finally:
        for layer, (formulation, fold) in zip(layers, saved, strict=True):
            layer.formulation, layer.fold_attentions = formulation, fold


def _cpu_jiffies() -> tuple[int, int] | None:
    """Busy clock ticks of the whole machine and of this process, or None without /proc."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        with open("/proc/self/stat") as own:
            own_fields = own.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    idle = fields[3] + fields[4]
    return sum(fields) - idle, int(own_fields[11]) + int(own_fields[12])


def _other_processes_cpu(start: tuple[int, int] | None) -> float | None:
    """CPU seconds used by other processes since ``start`` (a :func:`_cpu_jiffies` reading)."""
    end = _cpu_jiffies()
    if start is None or end is None:
        return None
    ticks = (end[0] - start[0]) - (end[1] - start[1])
    return max(ticks, 0) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait_s: float, interval_s: float = 0.5, busy_limit: float = 0.05) -> float:
    """Wait (at most ``max_wait_s``) until other processes use under ``busy_limit`` of one CPU.

    Each check lasts ``interval_s``. Returns the seconds waited; without /proc it returns at once.
    """
    started = time.perf_counter()
    while time.perf_counter() - started < max_wait_s:
        reading = _cpu_jiffies()
        if reading is None:
            break
        time.sleep(interval_s)
        if (_other_processes_cpu(reading) or 0.0) < busy_limit * interval_s:
            break
    return time.perf_counter() - started


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    if match is None:
        raise OSError(f"{field} not in /proc/self/status")
    return int(match.group(1))


def _cpu_peak_memory_mib(run: Callable[[], object]) -> float | None:
    """Peak resident memory added while ``run()`` runs, in MiB (see the module docstring)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        before = _status_kib("VmRSS")
    except OSError:
        run()
        return None
    run()
    return (_status_kib("VmHWM") - before) / 1024


def _peak_memory_mib(run: Callable[[], object], device: torch.device) -> float | None:
    if device.type != "cuda":
        return _cpu_peak_memory_mib(run)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def _build(arch: str, stem: str, variant: Variant, device: torch.device) -> nn.Module:
    """The eager network of ``variant`` (seeded, so every variant of a kind has the same weights)."""
    torch.manual_seed(0)
    num_classes = 10 if stem == "cifar" else 1000
    options = {} if variant.conv == "static" else {"kernel_num": variant.kernel_num}
    model = create_model(arch, conv=variant.conv, num_classes=num_classes, stem=stem, **options).to(device)
    return model.to(memory_format=torch.channels_last) if variant.channels_last else model


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(model: nn.Module, inputs: Tensor, mode: str, naive: bool, clock: Callable[[], float]) -> float:
    """Seconds of one iteration: a training step (forward, mean of the logits, backward) or inference."""
    device = inputs.device
    with naive_formulation(model) if naive else nullcontext():
        _synchronize(device)
        start = clock()
        if mode == "train":
            model(inputs).mean().backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                model(inputs)
        _synchronize(device)
        return clock() - start


def measure_setting(
    setting: Setting,
    models: dict[tuple[str, int, bool], nn.Module],
    device: torch.device,
    clock: str = "wall",
    quiet_wait_s: float = 0.0,
) -> dict[str, Any]:
    """Time the variants of one setting side by side; ``models`` maps :attr:`Variant.network` to a network.

    Every variant sees the same random batch. Compiled variants are compiled (one untimed call) before
    the warm-up round. Before each round it waits up to ``quiet_wait_s`` for the other processes to
    go quiet; the CPU time they use during the rounds is recorded.
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
        runs[variant] = partial(_time_once, model, batch, setting.mode, variant.naive, CLOCKS[clock])
        if variant.compiled:
            runs[variant]()
    waited = wait_for_quiet(quiet_wait_s)
    start = _cpu_jiffies()
    memory = {variant: _peak_memory_mib(run, device) for variant, run in runs.items()}
    others = [_other_processes_cpu(start)]
    times: dict[Variant, list[float]] = {variant: [] for variant in runs}
    for _ in range(setting.repeats):
        waited += wait_for_quiet(quiet_wait_s)
        start = _cpu_jiffies()
        for variant, run in runs.items():
            times[variant].append(run())
        others.append(_other_processes_cpu(start))
    static = statistics.median(times[STATIC])
    rows = []
    for variant, values in times.items():
        median = statistics.median(values)
        rows.append(
            {
                "variant": variant.name,
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
    }


def run_benchmark(
    settings: Sequence[Setting] = DEFAULT_SETTINGS,
    device: str | torch.device = "cpu",
    threads: int = 2,
    progress: Callable[[str], None] | None = None,
    quiet_wait_s: float = 0.0,
    clock: str = "wall",
) -> dict[str, Any]:
    """Measure every setting; returns the JSON-ready results (see the module docstring).

    The networks are built once per architecture and stem, each from the same seed.
    ``quiet_wait_s``: before each round, wait up to this long for other processes to go quiet.
    ``clock``: ``"wall"`` (elapsed time) or ``"cpu"`` (CPU time of the calling thread: immune to
    other processes, valid with ``threads=1`` on CPU only).
    """
    device = resolve_device(device)
    if isinstance(quiet_wait_s, bool) or not isinstance(quiet_wait_s, int | float) or not quiet_wait_s >= 0:
        raise ValueError(f"quiet_wait_s must be a number of seconds >= 0, got {quiet_wait_s!r}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    if clock == "cpu" and (threads != 1 or device.type != "cpu"):
        raise ValueError("clock='cpu' measures one thread: use it with threads=1 on the CPU")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    measured = []
    try:
        groups: dict[tuple[str, str], list[Setting]] = {}
        for setting in settings:
            groups.setdefault((setting.arch, setting.stem), []).append(setting)
        for (arch, stem), group in groups.items():
            models: dict[tuple[str, int, bool], nn.Module] = {}
            for variant in dict.fromkeys(v for setting in group for v in setting.variants):
                if variant.network not in models:
                    models[variant.network] = _build(arch, stem, variant, device)
            for setting in group:
                if progress is not None:
                    progress(
                        f"{setting.name}: {len(setting.variants)} variants, {setting.repeats + 1} rounds"
                    )
                measured.append(measure_setting(setting, models, device, clock, quiet_wait_s))
            del models
    finally:
        torch.set_num_threads(previous_threads)
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": _device_name(device),
        "device_type": device.type,
        "threads": threads,
        "clock": clock,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dtype": "float32",
        "wall_s": time.perf_counter() - started,
        "quiet_wait_s": quiet_wait_s,
        "settings": measured,
        "targets": evaluate_targets(measured),
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read(), re.MULTILINE)
        name = match.group(1) if match else name
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical CPUs"


def _target(
    description: str, setting: dict[str, Any], value: float, threshold: float, at_most: bool
) -> dict[str, Any]:
    return {
        "target": description,
        "setting": setting["setting"],
        "measured": value,
        "threshold": threshold,
        "met": value <= threshold if at_most else value >= threshold,
    }


def evaluate_targets(settings: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each checked in every measured setting it applies to.

    - FMDConv ResNet-18 (n = 4): a training step at most 2.5x the static one; inference at batch 1
      at most 1.5x.
    - FMDConv at least 2x faster than ODConv (n = 4) in a training step.
    - Every dynamic variant faster than its naive computation.
    """
    targets = []
    for setting in settings:
        rows = {row["variant"]: row for row in setting["results"]}
        fmd, od = rows.get("fmd n=4"), rows.get("od n=4")
        resnet18 = setting["arch"] == "resnet18"
        if fmd is not None and resnet18 and setting["mode"] == "train":
            targets.append(
                _target("FMDConv n=4 training step / static", setting, fmd["relative_to_static"], 2.5, True)
            )
        if fmd is not None and resnet18 and setting["mode"] == "inference" and setting["batch_size"] == 1:
            targets.append(
                _target("FMDConv n=4 inference / static", setting, fmd["relative_to_static"], 1.5, True)
            )
        if fmd is not None and od is not None and setting["mode"] == "train":
            speedup = od["median_s"] / fmd["median_s"]
            targets.append(_target("ODConv n=4 / FMDConv n=4 training step", setting, speedup, 2.0, False))
        for name, row in rows.items():
            naive = rows.get(f"{name} naive")
            if naive is not None:
                speedup = naive["median_s"] / row["median_s"]
                targets.append(_target(f"naive / {name}", setting, speedup, 1.0, False))
    return targets


def _column_title(setting: dict[str, Any]) -> str:
    return f"{setting['stem']} {setting['image_size']}px b{setting['batch_size']} {setting['mode']}"


def _ratio_cell(row: dict[str, Any], static: dict[str, Any]) -> str:
    reference = static["median_s"]
    text = f"{row['relative_to_static']:.2f}"
    if len(row["times_s"]) > 1:
        text += f" [{row['min_s'] / reference:.2f}-{row['max_s'] / reference:.2f}]"
    if row is static:
        text += f" ({reference * 1e3:.0f} ms)"
    return text


def _memory_cell(row: dict[str, Any]) -> str:
    return "-" if row["peak_memory_mib"] is None else f"{row['peak_memory_mib']:.0f}"


def _table(
    settings: Sequence[dict[str, Any]], cell: Callable[[dict[str, Any], dict[str, Any]], str]
) -> list[str]:
    names = list(dict.fromkeys(row["variant"] for s in settings for row in s["results"]))
    lines = [
        "| variant | " + " | ".join(_column_title(s) for s in settings) + " |",
        "|---|" + "---|" * len(settings),
    ]
    for name in names:
        cells = []
        for setting in settings:
            rows = {row["variant"]: row for row in setting["results"]}
            cells.append(cell(rows[name], rows["static"]) if name in rows else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: times relative to static, peak memory, targets and machine load."""
    settings = results["settings"]
    lines = [
        "# Speed of the dynamic ResNets relative to the static one",
        "",
        f"{results['device']}; threads: {results['threads']}; clock: {results['clock']}; "
        f"{results['dtype']}, torch {results['torch']}; "
        f"measured {results['created']} in one run of {results['wall_s']:.0f} s.",
        "",
        "Each cell: median time of one iteration (a training step: forward, backward; or an inference "
        "forward pass) divided by the static network's median in the same column, with the range over "
        "the timed rounds in brackets; the static row gives its median in ms. `naive`: every dynamic "
        "layer with the batch folded into groups and the channel attentions on the feature maps "
        "(the authors' way). `compiled`: through `torch.compile` (default inductor backend), compiled "
        "before timing; `channels_last`: weights and inputs in that memory format.",
    ]
    for arch in dict.fromkeys(s["arch"] for s in settings):
        group = [s for s in settings if s["arch"] == arch]
        rounds = ", ".join(f"{_column_title(s)}: {s['repeats']}" for s in group)
        lines += ["", f"## {arch}: time relative to static", "", f"Timed rounds: {rounds}.", ""]
        lines += _table(group, _ratio_cell)
        lines += ["", f"## {arch}: peak memory added by one iteration (MiB)", ""]
        lines += _table(group, lambda row, static: _memory_cell(row))
    lines += [
        "",
        "## Targets",
        "",
        "| target | setting | measured | threshold | met |",
        "|---|---|---|---|---|",
    ]
    for target in results["targets"]:
        sign = "<=" if target["target"].endswith("static") else ">="
        lines.append(
            f"| {target['target']} | {target['setting']} | {target['measured']:.2f} | "
            f"{sign} {target['threshold']:g} | {'yes' if target['met'] else '**no**'} |"
        )
    load = [
        f"{s['setting']}: {s['other_processes_cpu_s']:.0f} s"
        for s in settings
        if s["other_processes_cpu_s"] is not None
    ]
    if load:
        lines += [
            "",
            "CPU time other processes used while each setting was being timed (the run waited up to "
            f"{results['quiet_wait_s']:.0f} s before each round for them to go quiet): "
            + "; ".join(load)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], directory: str | Path, stem: str = "cpu") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` (:func:`to_markdown`) in ``directory``, each atomically."""
    return write_result_files(results, to_markdown(results), directory, stem)


def write_result_files(
    results: dict[str, Any], markdown: str, directory: str | Path, stem: str
) -> tuple[Path, Path]:
    """Write ``results`` as ``<stem>.json`` and ``markdown`` as ``<stem>.md`` in ``directory``, each
    replaced atomically; the benchmarks' common output (CPU here, GPU in :mod:`.gpu_bench`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = directory / f"{stem}.json", directory / f"{stem}.md"
    write_text_atomic(json_path, json.dumps(results, indent=2) + "\n")
    write_text_atomic(markdown_path, markdown)
    return json_path, markdown_path
