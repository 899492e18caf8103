"""The GPU benchmark as one prepared run (``fmdconv bench --gpu OUT``, ``benchmarks/gpu.sh OUT``).

ResNet-18 and ResNet-50 (ImageNet stem, 224x224) on one CUDA device, for the static network and
FMDConv, ODConv, DyConv and CondConv with n = 4: a training step at batch 64 in fp32 and under bf16
autocast (with the peak memory of the fp32 step), inference at batch 1 eager and graph-captured
(``torch.compile(mode="reduce-overhead", fullgraph=True)``), and inference at batch 64. FMDConv and
ODConv also run with each exact formulation forced, beside ``auto`` (the measured choice).

Every time is the median of CUDA-event timings of single iterations after a warm-up (which includes
the measured choice's own timing and cuDNN's autotuning, ``cudnn.benchmark`` on); every ratio
divides by the static network's median of the same block (architecture, measurement) in the same
run. Rows run in order of importance and the JSON and Markdown files are rewritten after each row,
so a run cut short by a time limit still leaves every finished row; ``budget_s`` skips the rows
that would start after it.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fmdconv.layers import KERNEL_MIXTURES, formulations, set_formulation
from fmdconv.models import create_model
from fmdconv.profiling.bench_report import write_result_files
from fmdconv.profiling.bench_settings import exact_formulations
from fmdconv.utils.devices import resolve_device
from fmdconv.utils.machine import machine_line, machine_record
from fmdconv.utils.timing import time_call, time_interleaved

# The kernel mixtures, whose formulations the benchmark times, newest first (the records list them
# by year): the two newest get the most rows.
NEWEST_FIRST = tuple(reversed(KERNEL_MIXTURES))
KINDS = ("static", *NEWEST_FIRST)
ARCHS = ("resnet18", "resnet50")
MEASUREMENTS = {
    "train_fp32": "training step, batch 64, fp32",
    "train_bf16": "training step, batch 64, bf16 autocast",
    "infer_b1_graph": 'inference, batch 1, torch.compile(mode="reduce-overhead")',
    "infer_b1_eager": "inference, batch 1, eager",
    "infer_b64": "inference, batch 64",
}


@dataclass(frozen=True)
class Row:
    """One timed network: architecture, measurement (a :data:`MEASUREMENTS` key), kind, formulation."""

    arch: str
    measurement: str
    kind: str
    formulation: str = "auto"

    @property
    def name(self) -> str:
        if self.kind == "static":
            return "static"
        return f"{self.kind} n=4" + ("" if self.formulation == "auto" else f" {self.formulation}")


def gpu_rows(quick: bool = False) -> list[Row]:
    """The benchmark's rows, the most important first (see the module docstring).

    ``quick``: ResNet-18 only, ``auto`` only for the dynamic kinds, and no forced formulations.
    """

    def block(arch: str, measurement: str, kinds: tuple[str, ...], forced: tuple[str, ...]) -> list[Row]:
        rows = [Row(arch, measurement, kind) for kind in kinds]
        if not quick:
            rows += [Row(arch, measurement, kind, f) for kind in forced for f in exact_formulations(kind)]
        return rows

    newest, older, first = NEWEST_FIRST[:2], NEWEST_FIRST[2:], NEWEST_FIRST[:1]
    main = ("static", *newest)
    rest = ("static", *older)
    rows = [
        *block("resnet18", "train_fp32", main, newest),
        *block("resnet18", "train_bf16", main, newest),
        *block("resnet18", "infer_b1_graph", main, ()),
        *block("resnet18", "train_fp32", rest, ()),
        *block("resnet18", "infer_b1_eager", KINDS, first),
        *block("resnet18", "infer_b64", KINDS, first),
        *block("resnet18", "train_bf16", rest, ()),
    ]
    if not quick:
        rows += [
            *block("resnet50", "train_fp32", main, ()),
            *block("resnet50", "train_bf16", main, ()),
            *block("resnet50", "infer_b1_graph", main, ()),
            *block("resnet50", "infer_b1_eager", KINDS, ()),
            *block("resnet50", "infer_b64", KINDS, ()),
            *block("resnet18", "infer_b1_graph", rest, ()),
        ]
    return list(dict.fromkeys(rows))  # a static row already measured in its block is not repeated


@dataclass(frozen=True)
class Sizes:
    """Image size, batch sizes and iteration counts (the defaults are the benchmark's; tests shrink them)."""

    image_size: int = 224
    train_batch: int = 64
    infer_batch: int = 64
    train_iters: int = 20
    infer_iters: int = 50
    warmup: int = 5


def _iteration(model: nn.Module, inputs: Tensor, measurement: str) -> Callable[[], object]:
    device_type = inputs.device.type
    autocast = (
        torch.autocast(device_type, dtype=torch.bfloat16) if measurement == "train_bf16" else nullcontext()
    )
    if measurement.startswith("train"):

        def train_step() -> None:
            with autocast:
                loss = model(inputs).float().mean()
            loss.backward()
            model.zero_grad(set_to_none=True)

        return train_step

    def infer() -> Tensor:
        with torch.no_grad():
            return model(inputs)

    return infer


def measure_row(row: Row, device: torch.device, sizes: Sizes = Sizes()) -> dict[str, Any]:
    """Time one row: median seconds, the range, peak memory (training rows) and the measured choices."""
    torch.manual_seed(0)
    options = {} if row.kind == "static" else {"kernel_num": 4}
    model = create_model(row.arch, conv=row.kind, num_classes=1000, stem="imagenet", **options).to(device)
    if row.kind != "static":
        set_formulation(model, row.formulation)
    training = row.measurement.startswith("train")
    model.train(training)
    batch = sizes.train_batch if training else (1 if "b1" in row.measurement else sizes.infer_batch)
    inputs = torch.randn(batch, 3, sizes.image_size, sizes.image_size, device=device)
    formulations.clear_benchmark_cache()
    compile_s = None
    if row.measurement == "infer_b1_graph":
        _iteration(model, inputs, row.measurement)()  # eager first: the measured choice, then compiled
        torch._dynamo.reset()  # every network is a new compile, not a recompile (dynamo's limit is 8)
        model = torch.compile(model, mode="reduce-overhead", fullgraph=True)
        compile_s = time_call(_iteration(model, inputs, row.measurement), device)
    run = _iteration(model, inputs, row.measurement)
    for _ in range(sizes.warmup):
        run()
    choices = Counter(formulations.benchmark_choices().values())
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    iterations = sizes.train_iters if training else sizes.infer_iters
    times = time_interleaved({row: run}, iterations, device, warmup=0, cuda_events=True)[row]
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda and training else None
    return {
        **asdict(row),
        "variant": row.name,
        "batch_size": batch,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "iterations": len(times),
        "peak_memory_mib": peak,
        "compile_s": compile_s,
        "measured_choices": dict(choices),
    }


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Set each row's ``relative_to_static`` and ``memory_relative_to_static`` (its block's static row)."""
    static = {(r["arch"], r["measurement"]): r for r in rows if r["kind"] == "static"}
    for row in rows:
        reference = static.get((row["arch"], row["measurement"]))
        row["relative_to_static"] = None if reference is None else row["median_s"] / reference["median_s"]
        both = reference is not None and row["peak_memory_mib"] and reference["peak_memory_mib"]
        row["memory_relative_to_static"] = (
            row["peak_memory_mib"] / reference["peak_memory_mib"] if both else None
        )


def _environment(device: torch.device) -> dict[str, Any]:
    from fmdconv.layers.triton_conv import triton_version  # imports Triton: only when asked

    machine = machine_record(device)
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "device": machine["gpu"] or machine["cpu"],
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": triton_version(),
        "python": platform.python_version(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "formulations": list(formulations.CONVOLUTIONS),
        "measured_choice": formulations.benchmark_enabled(),
    }


def run_gpu_benchmark(
    out: str | Path,
    device: str | torch.device = "cuda",
    quick: bool = False,
    budget_s: float = 240.0,
    sizes: Sizes = Sizes(),
    rows: list[Row] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure :func:`gpu_rows` in order, rewriting ``out``/gpu.json and gpu.md after each row.

    Rows that would start after ``budget_s`` seconds, graph-captured rows off CUDA, and rows whose
    run fails (out of memory, a compiler error) are recorded as skipped with the reason.

    Raises:
        ValueError: ``device`` is not on this machine (``"cuda"`` where torch has no CUDA device).
    """
    device = resolve_device(device)
    torch.backends.cudnn.benchmark = True
    results: dict[str, Any] = {**_environment(device), "quick": quick, "budget_s": budget_s, "rows": []}
    results["skipped"] = []
    started = time.perf_counter()
    for row in gpu_rows(quick) if rows is None else rows:
        reason = None
        if time.perf_counter() - started > budget_s:
            reason = f"time budget of {budget_s:.0f} s spent"
        elif row.measurement == "infer_b1_graph" and device.type != "cuda":
            reason = "CUDA graphs need a CUDA device"
        elif not formulations.formulation_available(row.formulation, torch.zeros(1, device=device)):
            reason = f"formulation {row.formulation!r} is not available on {device.type}"
        else:
            try:
                measured = measure_row(row, device, sizes)
            except Exception as error:  # out of memory, a compiler error: report it, go on with the next row
                reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            else:
                results["rows"].append(measured)
                if progress is not None:
                    progress(f"{row.arch} {row.measurement} {row.name}: {measured['median_s'] * 1e3:.2f} ms")
        if reason is not None:
            results["skipped"].append({**asdict(row), "variant": row.name, "reason": reason})
        if device.type == "cuda":
            torch.cuda.empty_cache()
        results["wall_s"] = time.perf_counter() - started
        add_ratios(results["rows"])
        write_gpu_results(results, out)
    return results


def _blocks(rows: list[dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    for arch in dict.fromkeys(r["arch"] for r in rows):
        yield arch, [r for r in rows if r["arch"] == arch]


def to_markdown(results: dict[str, Any]) -> str:
    """One table per architecture: variants down, measurements across, each cell a ratio to static."""
    lines = [
        "# GPU benchmark: dynamic ResNets relative to the static one",
        "",
        f"Machine: {machine_line(results['machine'])}; Triton {results['triton'] or 'not installed'}; "
        f"cudnn.benchmark {results['cudnn_benchmark']}, TF32 matmul {results['tf32_matmul']} / "
        f"cuDNN {results['tf32_cudnn']}; measured {results['created']} in {results['wall_s']:.0f} s"
        f"{' (--quick)' if results['quick'] else ''}.",
        "",
        "ImageNet stem, 224x224 unless the file says otherwise, n = 4. Each cell: median of single "
        "iterations (CUDA events) divided by the static network's median of the same column in this run; "
        "the static row gives its median in ms. `auto`: the measured formulation choice; a formulation "
        "named after the method: forced on every dynamic layer. Peak memory: "
        "`torch.cuda.max_memory_allocated` over the fp32 training steps (GiB, ratio to static).",
    ]
    for arch, rows in _blocks(results["rows"]):
        columns = [m for m in MEASUREMENTS if any(r["measurement"] == m for r in rows)]
        with_memory = any(r["peak_memory_mib"] for r in rows if r["measurement"] == "train_fp32")
        header = [MEASUREMENTS[m] for m in columns] + (
            ["peak memory, fp32 training step"] if with_memory else []
        )
        lines += [
            "",
            f"## {arch}",
            "",
            "| variant | " + " | ".join(header) + " |",
            "|---|" + "---|" * len(header),
        ]
        for name in dict.fromkeys(r["variant"] for r in rows):
            cells = {r["measurement"]: r for r in rows if r["variant"] == name}
            text = [_time_cell(cells.get(m)) for m in columns]
            if with_memory:
                text.append(_memory_cell(cells.get("train_fp32")))
            lines.append(f"| {name} | " + " | ".join(text) + " |")
    choices = [r for r in results["rows"] if r["measured_choices"]]
    if choices:
        lines += ["", "## What the measured choice picked (layer signatures per formulation)", ""]
        for r in choices:
            picked = ", ".join(f"{name} {count}" for name, count in sorted(r["measured_choices"].items()))
            lines.append(f"- {r['arch']} {MEASUREMENTS[r['measurement']]}, {r['variant']}: {picked}")
    if results["skipped"]:
        lines += ["", "## Skipped", ""]
        lines += [
            f"- {s['arch']} {s['measurement']} {s['variant']}: {s['reason']}" for s in results["skipped"]
        ]
    return "\n".join(lines) + "\n"


def _time_cell(row: dict[str, Any] | None) -> str:
    if row is None or row["relative_to_static"] is None:
        return ""
    text = f"{row['relative_to_static']:.2f}"
    if row["kind"] == "static":
        text += f" ({row['median_s'] * 1e3:.2f} ms)"
    if row["compile_s"] is not None:
        text += f", compiled in {row['compile_s']:.0f} s"
    return text


def _memory_cell(row: dict[str, Any] | None) -> str:
    if row is None or not row["peak_memory_mib"]:
        return ""
    ratio = row["memory_relative_to_static"]
    return f"{row['peak_memory_mib'] / 1024:.2f} GiB" + ("" if ratio is None else f" ({ratio:.2f}x)")


def write_gpu_results(results: dict[str, Any], out: str | Path, stem: str = "gpu") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` (:func:`to_markdown`) in ``out``, each atomically."""
    return write_result_files(results, to_markdown(results), out, stem)
