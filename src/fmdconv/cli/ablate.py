"""``fmdconv ablate``: one training per value of one factor, then a table and a Figure-5-style plot.

Examples::

    fmdconv ablate --factor temperature --out runs/ablate-temperature
    fmdconv ablate --factor kernel_num --values 1 2 4 --epochs 2 --out runs/ablate-n
    fmdconv ablate --factor attentions --values all input+output kernel --out runs/ablate-attn
    fmdconv ablate --factor temperature --values 34 100 --seeds 3 --out runs/ablate-t-seeds

Every recipe setting has a flag, as in ``fmdconv train``; the factor's own setting comes from
``--values`` (see docs/explain.md).
"""

from __future__ import annotations

import argparse

from fmdconv.cli._arguments import add_device_argument, int_at_least, output_folder
from fmdconv.cli.train import (
    add_recipe_arguments,
    recipe_from_args,
    recipe_overrides,
    report_errors,
    sweep_exit_code,
)
from fmdconv.experiments.ablation import REPORT_FILE, ablate, markdown_table
from fmdconv.experiments.factors import FACTORS


@report_errors
def run_ablate(args: argparse.Namespace) -> int:
    factor = FACTORS[args.factor]
    if factor.setting is not None and factor.setting in recipe_overrides(args):
        flag = "--" + factor.setting.replace("_", "-")
        raise ValueError(f"{flag} is what --factor {factor.name} varies; give its values with --values")
    recipe = recipe_from_args(args)
    results = ablate(
        recipe,
        factor.name,
        args.out,
        values=args.values,
        device=args.device,
        progress=not args.no_progress,
        tensorboard=args.tensorboard,
        seeds=args.seeds,
    )
    print(markdown_table(factor, results), end="")
    print(f"report: {args.out / REPORT_FILE}")
    return sweep_exit_code(args, sum(r.failed for r in results), len(results))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ablate",
        help="train once per value of one factor and report (Figure 5)",
        description=(
            "Train the recipe once per value of one factor, everything else equal, and write report.md, "
            "results.json and ablation.png (top-1 and top-5 against the factor) to --out. Factors: "
            "temperature (initial kernel temperature; default values 34 40 52 61 100, the FMDConv "
            "authors' study), kernel_num (default 1 2 4 8), schedule (kernel-temperature schedule: "
            "degraded constant step), attentions (attentions kept: all, none, or names joined by +, "
            "e.g. input+output; default: all, each of the model's attentions alone, none). With --seeds N "
            "each value trains N times and the table shows mean ± std. Runs already in --out are "
            "resumed, finished ones reused."
        ),
    )
    parser.add_argument("--factor", required=True, choices=list(FACTORS), help="what to vary")
    parser.add_argument(
        "--values", nargs="+", metavar="VALUE", help="values of the factor (default: the factor's own list)"
    )
    parser.add_argument(
        "--out",
        type=output_folder,
        required=True,
        help="report folder; runs go to OUT/runs/<factor>-<value>/ (with --seeds N > 1: .../seed<s>/)",
    )
    parser.add_argument(
        "--seeds",
        type=int_at_least(1),
        default=1,
        help="runs per value, seeds --seed, --seed + 1, ...; the table shows mean ± std (default: 1)",
    )
    add_recipe_arguments(parser)
    add_device_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="draw no progress bars")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files")
    parser.set_defaults(run=run_ablate)
