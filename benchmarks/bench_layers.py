"""Time each formulation of one FMDConv and one ODConv 3x3 layer (n = 4) at the four stage shapes of a
CIFAR ResNet-18 (batch 64), in inference and in a training step, next to the static convolution, and
record which one the automatic rule picks. This is the measurement behind the rule in
:func:`fmdconv.layers.formulations.choose_formulation`.

Usage: ``python benchmarks/bench_layers.py [--threads 2] [--repeats 7]`` (CPU); writes
``benchmarks/results/<machine>/cpu-layers.json`` and ``.md`` (each replaced atomically), naming the
machine. The static convolution and the formulations of a layer are timed in interleaved rounds
(:func:`fmdconv.utils.timing.time_interleaved`, one warm-up round, median).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import Tensor, nn

from fmdconv import FMDConv2d, ODConv2d
from fmdconv.layers.formulations import choose_formulation
from fmdconv.utils.io import write_text_atomic
from fmdconv.utils.machine import machine_line, machine_record
from fmdconv.utils.timing import time_interleaved

STAGES = ((64, 32), (128, 16), (256, 8), (512, 4))  # channels, feature-map side
BATCH = 64
RESULTS = Path(__file__).resolve().parent / "results"


def iteration(layer: nn.Module, x: Tensor, train: bool) -> Callable[[], object]:
    def run() -> object:
        if not train:
            with torch.no_grad():
                return layer(x)
        inputs = x.detach().requires_grad_()
        layer(inputs).sum().backward()
        layer.zero_grad(set_to_none=True)
        return None

    return run


def forced(layer: nn.Module, formulation: str, run: Callable[[], object]) -> Callable[[], object]:
    """``run`` with ``formulation`` forced on ``layer`` for the call (``"auto"`` again after it)."""

    def run_forced() -> object:
        layer.formulation = formulation
        try:
            return run()
        finally:
            layer.formulation = "auto"

    return run_forced


def measure(repeats: int) -> list[dict]:
    rows = []
    for channels, side in STAGES:
        x = torch.randn(BATCH, channels, side, side)
        static = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        for method in (FMDConv2d, ODConv2d):
            layer = method(channels, channels, 3, padding=1, kernel_num=4)
            formulations = ["grouped", "matmul"] + ([] if method is ODConv2d else ["mixed"])
            chosen = choose_formulation(layer.attentions(x), 4, layer._geometry, x.shape, channels)
            for mode in ("inference", "train"):
                train = mode == "train"
                candidates = {"static": iteration(static, x, train)}
                candidates.update({f: forced(layer, f, iteration(layer, x, train)) for f in formulations})
                measured = time_interleaved(candidates, repeats, warmup=1)
                times = {name: statistics.median(values) * 1e3 for name, values in measured.items()}
                rows.append(
                    {
                        "method": method.__name__,
                        "channels": channels,
                        "side": side,
                        "mode": mode,
                        "ms": times,
                        "chosen": chosen,
                        "fastest": min((f for f in times if f != "static"), key=times.__getitem__),
                    }
                )
                print(f"{method.__name__} {channels}ch {side}x{side} {mode}: {times} -> {chosen}", flush=True)
    return rows


def to_markdown(results: dict) -> str:
    lines = [
        "# One 3x3 layer (n = 4), batch 64, at the CIFAR ResNet-18 stage shapes",
        "",
        f"Machine: {machine_line(results['machine'])}; float32; measured {results['created']}; "
        f"median of {results['repeats']} interleaved rounds, in ms.",
        "",
        "| method | channels, map | mode | static | grouped | mixed | matmul | rule picks | fastest |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        ms = row["ms"]
        cells = [f"{ms[f]:.0f}" if f in ms else "-" for f in ("static", "grouped", "mixed", "matmul")]
        lines.append(
            f"| {row['method']} | {row['channels']}, {row['side']}x{row['side']} | {row['mode']} | "
            + " | ".join(cells)
            + f" | {row['chosen']} | {row['fastest']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    machine = machine_record()
    results = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "rows": measure(args.repeats),
    }
    folder = RESULTS / machine["slug"]
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "cpu-layers.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(folder / "cpu-layers.md", to_markdown(results))
    print(f"wrote {folder / 'cpu-layers.json'} and .md")


if __name__ == "__main__":
    main()
