"""Per-call cost of one dynamic layer: host overhead at a tiny size, and batch-1 inference at ResNet-18
shapes, each against the static convolution.

1. **Overhead**: every kind of :func:`fmdconv.create_conv2d` (``static`` is ``nn.Conv2d``) as a 3x3 layer,
   8 -> 8 channels, padding 1, on a (2, 8, 8, 8) input, where the arithmetic is negligible and the
   time is the host's: dispatch, autograd bookkeeping, Python. Microseconds per call of an inference
   forward (eval, no grad), a training forward (autograd recording) and a training step (forward and
   backward of the sum), the kinds interleaved, ``--calls`` calls per timed round, the minimum round.
2. **Batch 1**: the 3x3 convolutions of a ResNet-18 at 224x224 (seven shapes: the four stages and the
   three strided ones), FMDConv, ODConv, DyConv and CondConv (n = 4, automatic formulation, the
   measured choice as configured) and the static convolution, batch 1, eval, no grad; milliseconds
   (minimum of the interleaved rounds) and the ratio to the static convolution.

Usage: ``PYTHONPATH=src python benchmarks/bench_layer_overhead.py [--threads 1] [--out DIR]``; writes
``layer-overhead.json`` and ``layer-overhead.md`` under ``benchmarks/results/<machine>/`` (or ``DIR``),
each replaced atomically, naming the machine. ``--quick``: a few calls at reduced shapes, to check
that the script runs (its figures mean nothing).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import Tensor, nn

from fmdconv import CONV_KINDS, create_conv2d, measurement_report
from fmdconv.profiling.bench_report import write_result_files
from fmdconv.utils.machine import machine_line, machine_record
from fmdconv.utils.timing import time_interleaved

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("inference", "forward", "train step")
# ResNet-18's 3x3 convolutions at 224x224: input channels, output channels, input side, stride.
RESNET18_SHAPES = (
    (64, 64, 56, 1),
    (64, 128, 56, 2),
    (128, 128, 28, 1),
    (128, 256, 28, 2),
    (256, 256, 14, 1),
    (256, 512, 14, 2),
    (512, 512, 7, 1),
)
BATCH1_KINDS = ("static", "fmd", "od", "dy", "cond")


@dataclass(frozen=True)
class Sizes:
    """How much to time: calls per round and rounds (overhead), rounds (batch 1), shape scale."""

    calls: int = 200
    rounds: int = 15
    batch1_rounds: int = 15
    scale: int = 1  # divides the channels and the map sides of the batch-1 shapes


QUICK = Sizes(calls=2, rounds=2, batch1_rounds=2, scale=16)


def overhead_call(layer: nn.Module, x: Tensor, mode: str, calls: int) -> Callable[[], None]:
    """``calls`` calls of ``layer`` on ``x`` in ``mode`` (see :data:`MODES`)."""
    layer.train(mode != "inference")
    inputs = x.detach().requires_grad_(mode == "train step")

    def run() -> None:
        for _ in range(calls):
            if mode == "inference":
                with torch.no_grad():
                    layer(inputs)
            elif mode == "forward":
                layer(inputs)
            else:
                layer(inputs).sum().backward()
                layer.zero_grad(set_to_none=True)

    return run


def measure_overhead(sizes: Sizes) -> list[dict]:
    x = torch.randn(2, 8, 8, 8)
    layers = {kind: create_conv2d(kind, 8, 8, 3, padding=1) for kind in CONV_KINDS}
    rows = []
    for mode in MODES:
        runs = {kind: overhead_call(layer, x, mode, sizes.calls) for kind, layer in layers.items()}
        times = time_interleaved(runs, sizes.rounds, warmup=1)
        us = {kind: min(values) / sizes.calls * 1e6 for kind, values in times.items()}
        for kind in CONV_KINDS:
            rows.append(
                {"kind": kind, "mode": mode, "us_per_call": us[kind], "ratio": us[kind] / us["static"]}
            )
        print(f"overhead, {mode}: " + ", ".join(f"{k} {v:.0f} us" for k, v in us.items()), flush=True)
    return rows


def inference(layer: nn.Module, x: Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            layer(x)

    return run


def measure_batch1(sizes: Sizes) -> list[dict]:
    rows = []
    for in_channels, out_channels, side, stride in RESNET18_SHAPES:
        c_in, c_out, side = (
            in_channels // sizes.scale,
            out_channels // sizes.scale,
            max(side // sizes.scale, 3),
        )
        x = torch.randn(1, c_in, side, side)
        layers = {
            kind: create_conv2d(kind, c_in, c_out, 3, stride=stride, padding=1).eval()
            for kind in BATCH1_KINDS
        }
        times = time_interleaved(
            {kind: inference(layer, x) for kind, layer in layers.items()}, sizes.batch1_rounds
        )
        ms = {kind: min(values) * 1e3 for kind, values in times.items()}
        chosen = {
            kind: sorted(set(layer._choices.by_input.values()))
            for kind, layer in layers.items()
            if hasattr(layer, "_choices")
        }
        rows.append(
            {
                "shape": f"{c_in}->{c_out}, {side}x{side}, stride {stride}",
                "ms": ms,
                "ratio": {kind: value / ms["static"] for kind, value in ms.items()},
                "formulation": chosen,
            }
        )
        print(
            f"batch 1, {rows[-1]['shape']}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items()),
            flush=True,
        )
    return rows


def to_markdown(results: dict) -> str:
    sizes = results["sizes"]
    lines = [
        "# Per-call cost of one layer against the static convolution",
        "",
        f"Machine: {machine_line(results['machine'])}; float32; measured {results['created']}"
        + (" (--quick: not a measurement)" if results["quick"] else "")
        + ".",
        "",
        f"## Host overhead: 3x3, 8 -> 8 channels, input (2, 8, 8, 8); us per call (minimum of "
        f"{sizes['rounds']} rounds of {sizes['calls']} calls)",
        "",
        "| kind | " + " | ".join(MODES) + " |",
        "|---|" + "---|" * len(MODES),
    ]
    by_kind: dict[str, dict[str, dict]] = {}
    for row in results["overhead"]:
        by_kind.setdefault(row["kind"], {})[row["mode"]] = row
    for kind, modes in by_kind.items():
        cells = [f"{modes[m]['us_per_call']:.0f} ({modes[m]['ratio']:.1f}x)" for m in MODES]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Batch-1 inference at the ResNet-18 (224x224) 3x3 shapes; ms (minimum of "
        f"{sizes['batch1_rounds']} rounds) and ratio to static",
        "",
        "| shape | " + " | ".join(BATCH1_KINDS) + " | formulation (fmd / od) |",
        "|---|" + "---|" * (len(BATCH1_KINDS) + 1),
    ]
    for row in results["batch1"]:
        cells = [
            f"{row['ms'][k]:.2f}" + ("" if k == "static" else f" ({row['ratio'][k]:.2f}x)")
            for k in BATCH1_KINDS
        ]
        picked = " / ".join(",".join(row["formulation"].get(k, [])) for k in ("fmd", "od"))
        lines.append(f"| {row['shape']} | " + " | ".join(cells) + f" | {picked} |")
    report = results["measurement"]
    lines += ["", f"Measured choice: {report}."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=None, help="folder (default benchmarks/results/<machine>)"
    )
    parser.add_argument("--quick", action="store_true", help="a few tiny calls, to check that it runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = QUICK if args.quick else Sizes()
    machine = machine_record()
    results = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "quick": args.quick,
        "sizes": asdict(sizes),
        "overhead": measure_overhead(sizes),
        "batch1": measure_batch1(sizes),
        "measurement": str(measurement_report()),
    }
    json_path, _ = write_result_files(
        results, to_markdown(results), args.out or RESULTS / machine["slug"], "layer-overhead"
    )
    print(f"wrote {json_path} and .md")
    return json_path.parent


if __name__ == "__main__":
    main()
