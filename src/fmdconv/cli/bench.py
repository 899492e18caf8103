"""``fmdconv bench``: the speed benchmark of the dynamic ResNets against the static one.

Examples::

    fmdconv bench                          # the default grid, into benchmarks/results/<machine>/
    fmdconv bench --authors-code /tmp/authors/fmdconv --authors-code /tmp/authors/odconv
    fmdconv bench --full                   # every variant in every setting (much longer)
    fmdconv bench --compile                # eager against torch.compile, written to cpu-compile.*
    fmdconv bench --device cuda --name gpu # the same on a GPU, written to gpu.json / gpu.md
    fmdconv bench --threads 1 --clock cpu --name cpu-1thread  # on a busy shared machine
    fmdconv bench --gpu --out OUT          # the GPU benchmark (benchmarks/gpu.sh), under 5 minutes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fmdconv.cli._arguments import add_device_argument, number_at_least, output_folder
from fmdconv.profiling import bench, gpu_bench
from fmdconv.profiling.authors_code import AUTHORS_CODE_ENV, authors_code_folders, find_releases
from fmdconv.utils.devices import resolve_device
from fmdconv.utils.machine import machine_slug

RESULTS = Path("benchmarks/results")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time dynamic ResNet-18/50 against the static ones (training step, inference, memory)",
        description=(
            "Time the static ResNet-18 and ResNet-50 and each dynamic method at n = 1 and n = 4 "
            "(automatic formulation, each formulation forced, and the naive batch-folded computation) "
            "side by side, in a training step and in inference, with the CIFAR stem at 32x32 (batch 64) "
            "and the ImageNet stem at 224x224 (batches 1 and 32) and 112x112 (batch 32, training); with "
            "--authors-code, the authors' FMDConv and ODConv ResNets beside them. Writes NAME.json and "
            "NAME.md, which name the machine, to --out."
        ),
    )
    parser.add_argument(
        "--out",
        type=output_folder,
        default=None,
        help=f"folder (default {RESULTS}/<machine>, e.g. {RESULTS}/amd-epyc)",
    )
    parser.add_argument("--name", default=None, help="file stem (default: the device type, e.g. cpu)")
    add_device_argument(parser, default=None, described="cpu; cuda with --gpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument(
        "--full",
        action="store_true",
        help="every variant in every setting (the default grid leaves some out)",
    )
    grid.add_argument(
        "--compile",
        action="store_true",
        help="the static and FMDConv ResNet-18 eager and through torch.compile (default name: cpu-compile)",
    )
    grid.add_argument(
        "--gpu",
        action="store_true",
        help="the GPU benchmark: ResNet-18/50 at 224x224, training (fp32, bf16) and inference (batch 1 "
        "eager and graph-captured, batch 64), every formulation forced and auto; writes gpu.json/gpu.md",
    )
    parser.add_argument(
        "--authors-code",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder holding the authors' FMDConv or ODConv release (models/fmd_resnet.py or "
        f"models/od_resnet.py), timed beside fmdconv's; repeatable (default: ${AUTHORS_CODE_ENV}, "
        "folders separated by ':'; without either, those rows are skipped)",
    )
    parser.add_argument("--quick", action="store_true", help="with --gpu: ResNet-18 and auto only")
    parser.add_argument(
        "--arch",
        action="append",
        choices=gpu_bench.ARCHS,
        help="with --gpu: only this network's rows (repeatable; default: all)",
    )
    parser.add_argument(
        "--budget",
        type=number_at_least(0),
        default=240.0,
        metavar="SECONDS",
        help="with --gpu: start no row after this many seconds (default 240)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=number_at_least(0),
        default=30.0,
        metavar="SECONDS",
        help="before each round, wait up to this long for other processes to go quiet (default 30)",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time (default); cpu: the thread's CPU time, which other processes on a shared "
        "machine cannot inflate (needs --threads 1)",
    )
    parser.set_defaults(run=run)


def _error(message: str) -> int:
    print(f"fmdconv bench: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    if args.gpu:
        device = args.device or "cuda"
        try:
            resolve_device(device)
        except ValueError as error:
            return _error(f"--gpu: {error} (give --device cpu for a dry run of the GPU benchmark's code)")
        out = args.out or RESULTS / machine_slug(device)
        gpu_bench.run_gpu_benchmark(
            out,
            device=device,
            quick=args.quick,
            budget_s=args.budget,
            rows=[row for row in gpu_bench.gpu_rows(args.quick) if row.arch in args.arch]
            if args.arch
            else None,
            progress=lambda line: print(line, flush=True),
        )
        print(f"wrote {out / 'gpu.json'} and {out / 'gpu.md'}")
        return 0
    if args.quick or args.arch:
        return _error("--quick and --arch apply to --gpu only")
    if args.threads < 1 or (args.clock == "cpu" and args.threads != 1):
        return _error("--threads must be >= 1, and 1 with --clock cpu")
    grids = {"full": bench.FULL_SETTINGS, "compile": bench.COMPILE_SETTINGS}
    settings = next((grids[flag] for flag in grids if getattr(args, flag)), bench.DEFAULT_SETTINGS)
    authors_code = authors_code_folders(args.authors_code)
    try:
        find_releases(authors_code)
    except ValueError as error:
        return _error(str(error))
    results = bench.run_benchmark(
        settings,
        device=args.device or "cpu",
        threads=args.threads,
        progress=lambda line: print(line, flush=True),
        quiet_wait_s=args.quiet_wait,
        clock=args.clock,
        authors_code=authors_code,
    )
    name = args.name or results["device_type"] + ("-compile" if args.compile else "")
    out = args.out or RESULTS / results["machine"]["slug"]
    json_path, markdown_path = bench.write_results(results, out, name)
    print(f"wrote {json_path} and {markdown_path}")
    return 0
