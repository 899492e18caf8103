"""``fmdconv compare``: train the static baseline and the dynamic methods with one recipe and report."""

from __future__ import annotations

import argparse
from pathlib import Path

from fmdconv.cli._arguments import add_device_argument, int_at_least, output_folder
from fmdconv.cli.train import (
    DEFAULT_RECIPE,
    add_recipe_arguments,
    recipe_from_args,
    report_errors,
    sweep_exit_code,
)
from fmdconv.experiments.comparison import DEFAULT_METHODS, REPORT_FILE, compare, markdown_table
from fmdconv.models import METHODS


@report_errors
def run_compare(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    out_dir = args.out or Path("runs") / f"compare-{recipe.dataset}"
    results = compare(
        recipe,
        out_dir,
        methods=args.methods,
        device=args.device,
        latency_batch_size=args.latency_batch_size,
        progress=not args.no_progress,
        tensorboard=args.tensorboard,
        seeds=args.seeds,
    )
    print(markdown_table(results, args.latency_batch_size), end="")
    print(f"report: {out_dir / REPORT_FILE}")
    return sweep_exit_code(args, sum(r.failed for r in results), len(results))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="train the static baseline and each dynamic method with one recipe, then write a report",
        description=(
            "Train the static baseline and CondConv, DyConv, ODConv and FMDConv (or --methods, which also "
            "accepts dcd and the feature attentions se, cbam, eca on the static backbone) with one "
            f"recipe (default: {DEFAULT_RECIPE}, about 10 minutes on 2 CPU cores), then write report.md "
            "(params, MACs, training time per epoch, latency, top-1, top-5, IES, RCS), results.json and "
            "PNG plots to --out. "
            "Running it again with the same --out resumes unfinished runs and reuses finished ones; a run "
            "there of another recipe (more epochs, say) is refused, never mixed into the report."
        ),
    )
    add_recipe_arguments(parser, exclude=("conv", "attention"))
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(DEFAULT_METHODS),
        metavar="METHOD",
        help=f"methods to compare, in table order (default: {' '.join(DEFAULT_METHODS)})",
    )
    parser.add_argument("--out", type=output_folder, help="report folder (default: runs/compare-<dataset>)")
    add_device_argument(parser)
    parser.add_argument(
        "--latency-batch-size",
        type=int_at_least(1),
        default=1,
        help="images per timed forward pass (default: 1)",
    )
    parser.add_argument(
        "--seeds",
        type=int_at_least(1),
        default=1,
        help="runs per method, seeds --seed, --seed + 1, ...; the table shows mean ± std (default: 1)",
    )
    parser.add_argument("--no-progress", action="store_true", help="draw no progress bars")
    parser.add_argument(
        "--tensorboard", action="store_true", help="also write TensorBoard scalars for each run"
    )
    parser.set_defaults(run=run_compare)
