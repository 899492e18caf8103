"""Time each formulation of one FMDConv and one ODConv 3x3 layer (n = 4) at the four stage shapes of a
CIFAR ResNet-18 (batch 64), in inference and in a training step, next to the static convolution, and
record which one the automatic rule picks. This is the measurement behind the rule in
:func:`fmdconv.layers.formulations.choose_formulation`.

Usage: ``python benchmarks/bench_layers.py [--threads 2] [--repeats 7]`` (CPU); writes
``benchmarks/results/cpu-layers.json`` and ``.md`` (each replaced atomically).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import Tensor, nn

from fmdconv import FMDConv2d, ODConv2d
from fmdconv.layers.formulations import choose_formulation
from fmdconv.utils.io import write_text_atomic

STAGES = ((64, 32), (128, 16), (256, 8), (512, 4))  # channels, feature-map side
BATCH = 64
RESULTS = Path(__file__).resolve().parent / "results"


def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


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
                times = {"static": median_ms(iteration(static, x, train), repeats)}
                for formulation in formulations:
                    layer.formulation = formulation
                    times[formulation] = median_ms(iteration(layer, x, train), repeats)
                layer.formulation = "auto"
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
        f"{results['threads']} threads, float32, torch {results['torch']}; measured {results['created']}; "
        f"median of {results['repeats']} iterations, in ms.",
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
    results = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "rows": measure(args.repeats),
    }
    RESULTS.mkdir(exist_ok=True)
    write_text_atomic(RESULTS / "cpu-layers.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(RESULTS / "cpu-layers.md", to_markdown(results))
    print(f"wrote {RESULTS / 'cpu-layers.json'} and .md")


if __name__ == "__main__":
    main()
