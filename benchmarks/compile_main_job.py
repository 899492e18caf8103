"""Whether ``--compile`` pays for the main job on this machine: compile time against step time saved.

For each method, the main job's model (the ``fashion_mnist`` recipe's: ResNet-18, width 0.125, CIFAR
stem, one input channel, batch 128 of 28x28 images) takes SGD training steps eagerly and through
:func:`fmdconv.train.compilation.compile_for_training` (what ``fmdconv train --compile`` runs). It
reports the compile time (the first compiled step, which compiles the forward and backward graphs),
the steady step times (minimum and median of ``--rounds`` interleaved rounds after two warm-up
steps each), and what compiling would change over the recipe's steps (iterations per epoch x
epochs): ``compile_s + steps x (compiled - eager)``, negative where compiling pays.

Usage: ``PYTHONPATH=src python benchmarks/compile_main_job.py [--methods static fmd] [--out DIR]``;
writes ``compile-main-job.json`` and ``.md`` under ``benchmarks/results/<machine>/`` (or ``DIR``),
each replaced atomically, naming the machine. ``--quick``: batch 8 and one round, to check that the
script runs (its figures mean nothing). Every method compiles for minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fmdconv import create_model
from fmdconv.profiling.bench_report import write_result_files
from fmdconv.train import load_recipe
from fmdconv.train.compilation import compile_for_training
from fmdconv.utils.allocator import keep_freed_memory_once
from fmdconv.utils.machine import machine_line, machine_record, machine_slug
from fmdconv.utils.timing import time_interleaved

RESULTS = Path(__file__).resolve().parent / "results"
TRAIN_IMAGES = 60_000  # Fashion-MNIST's training split


def training_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> Callable[[], None]:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def measure(method: str, batch_size: int, rounds: int) -> dict:
    recipe = load_recipe("fashion_mnist")
    torch.manual_seed(0)
    model = create_model(
        recipe.model, conv=method, num_classes=10, stem=recipe.stem, width=recipe.width, in_chans=1
    ).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (batch_size,))
    eager = training_step(model, optimizer, x, y)
    compiled = training_step(compile_for_training(model), optimizer, x, y)
    start = time.perf_counter()
    compiled()
    compile_s = time.perf_counter() - start
    times = time_interleaved({"eager": eager, "compiled": compiled}, rounds, warmup=2)
    steps = (TRAIN_IMAGES // recipe.batch_size) * recipe.epochs
    eager_s, compiled_s = statistics.median(times["eager"]), statistics.median(times["compiled"])
    return {
        "method": method,
        "batch_size": batch_size,
        "compile_s": compile_s,
        "eager_min_s": min(times["eager"]),
        "eager_median_s": eager_s,
        "compiled_min_s": min(times["compiled"]),
        "compiled_median_s": compiled_s,
        "recipe_steps": steps,
        "job_change_s": compile_s + steps * (compiled_s - eager_s),
    }


def to_markdown(results: dict) -> str:
    lines = [
        "# torch.compile for the main job's training steps",
        "",
        f"Machine: {machine_line(results['machine'])}; float32; measured {results['created']}; "
        f"batch {results['rows'][0]['batch_size']}, medians (minimum) of {results['rounds']} "
        "interleaved rounds.",
        "",
        "| method | compile + first step (s) | eager step (ms) | compiled step (ms) "
        "| change over the recipe's steps (s) |",
        "|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['method']} | {row['compile_s']:.1f} | {row['eager_median_s'] * 1e3:.1f} "
            f"({row['eager_min_s'] * 1e3:.1f}) | {row['compiled_median_s'] * 1e3:.1f} "
            f"({row['compiled_min_s'] * 1e3:.1f}) | {row['job_change_s']:+.0f} "
            f"({row['recipe_steps']} steps) |"
        )
    lines += ["", "Negative change: compiling makes that method's part of the job faster."]
    if results["quick"]:
        lines += ["", "A `--quick` run (batch 8, one round): its figures are not a measurement."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["static", "fmd"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--out", type=Path, default=None, help="folder (default benchmarks/results/<machine>)"
    )
    parser.add_argument("--quick", action="store_true", help="batch 8, one round: checks the script")
    args = parser.parse_args(argv)
    keep_freed_memory_once()  # as the fmdconv command does
    batch_size = 8 if args.quick else load_recipe("fashion_mnist").batch_size
    rounds = 1 if args.quick else args.rounds
    rows = []
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        for method in args.methods:
            rows.append(measure(method, batch_size, rounds))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        torch.set_num_threads(previous_threads)
    results = {
        "machine": machine_record(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "threads": args.threads,
        "rounds": rounds,
        "quick": args.quick,
        "rows": rows,
    }
    json_path, _ = write_result_files(
        results, to_markdown(results), args.out or RESULTS / machine_slug(), "compile-main-job"
    )
    print(f"wrote {json_path} and .md")
    return json_path.parent


if __name__ == "__main__":
    main()
