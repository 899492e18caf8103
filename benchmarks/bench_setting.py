"""One setting of ``fmdconv bench`` re-timed alone: the static ResNet and a few methods, each with its
automatic formulation and every exact formulation forced, in interleaved rounds that rotate their
order.

A setting of the full grid gets few rounds (one, at 224x224 batch 32 in training), so a round that
meets a slow moment of a shared machine can decide a cell; this re-times one setting with more.

Usage (from the repository root, on a quiet machine)::

    PYTHONPATH=src python benchmarks/bench_setting.py --stem imagenet --image-size 224 --batch-size 32 \\
        --mode train --methods od --rounds 3 --name cpu-od-224-train

writes ``NAME.json`` and ``NAME.md`` under ``benchmarks/results/<machine>/`` (or ``--out``), in the
format of ``fmdconv bench`` and naming the machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fmdconv.profiling.bench import run_benchmark
from fmdconv.profiling.bench_report import write_results
from fmdconv.profiling.bench_settings import STATIC, Setting, Variant, forced
from fmdconv.utils.machine import machine_slug

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("cond", "dy", "od", "fmd")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=("resnet18", "resnet50"), default="resnet18")
    parser.add_argument("--stem", choices=("cifar", "imagenet"), default="imagenet")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mode", choices=("train", "inference"), default="train")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=["fmd"])
    parser.add_argument("--kernel-num", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default=None, help="file stem (default: cpu-setting)")
    parser.add_argument("--out", type=Path, default=None, help="folder (default: results/<machine>)")
    args = parser.parse_args(argv)
    for option in ("image_size", "batch_size", "kernel_num", "rounds", "threads"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    return args


def main(argv: Sequence[str] | None = None) -> tuple[Path, Path]:
    args = parse_args(argv)
    variants = [STATIC]
    for method in args.methods:
        variants += [Variant(method, args.kernel_num), *forced(method, args.kernel_num)]
    setting = Setting(
        args.arch, args.stem, args.image_size, args.batch_size, args.mode, args.rounds, tuple(variants)
    )
    results = run_benchmark([setting], threads=args.threads, progress=print)
    folder = args.out or RESULTS / machine_slug()
    paths = write_results(results, folder, stem=args.name or "cpu-setting")
    print(f"wrote {paths[0]} and {paths[1]}")
    return paths


if __name__ == "__main__":
    main()
