"""fmdconv's KernelWarehouse against the authors' code, in one process: training step and batch-1
inference.

Usage (from the repository root, on a quiet machine; ``AUTHORS`` a checkout or ``git archive``
export of github.com/OSVAI/KernelWarehouse)::

    python benchmarks/bench_kernelwarehouse.py AUTHORS [--models resnet18 resnet50] [--ratios 1 4]
        [--image-size 224] [--batch-size 32] [--repeats 10] [--threads N] [--out-dir DIR]

For each model and ratio it builds the authors' ``kw_resnet18`` / ``kw_resnet50`` with their
config of that ratio (:mod:`kw_authors`) and fmdconv's ``create_model(name, conv="kw",
kw_ratio=R)``, gives ours the authors' weights (``fmdconv.compat``; tau = 0 in both, a finished
model), checks the outputs agree, then times both (:mod:`authors_comparison`): the table and the
ratios authors / fmdconv (above 1: fmdconv faster) go to
``benchmarks/results/<machine>/kernelwarehouse.{json,md}``. Without the authors' code it says so
and exits. ``--quick`` runs ResNet-18 1/4x at 32x32, batch 2, one repeat, to check the script.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kw_authors
from authors_comparison import add_common_arguments, compare_pair, start, write_report
from fmdconv import create_model
from fmdconv.compat import convert_state_dict
from fmdconv.models.kernelwarehouse import parse_ratio

AUTHORS_FILE = "modules/kernel_warehouse.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, "checkout of OSVAI/KernelWarehouse")
    parser.add_argument(
        "--ratios", nargs="+", type=parse_ratio, default=["1"], help="kw_ratio values, 1/4 ... 4 (default 1)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if not start(args, AUTHORS_FILE):
        return 0
    if args.quick:
        args.models, args.ratios, args.image_size, args.batch_size, args.repeats = (
            ["resnet18"],
            ["1/4"],
            32,
            2,
            1,
        )
    code = kw_authors.load(str(args.authors))
    rows = []
    for name in args.models:
        for ratio in args.ratios:
            if ratio not in kw_authors.RESNET_CONFIGS.get(name, {}):
                print(f"skipped {name} {ratio}x: the authors have no config for it", file=sys.stderr)
                continue
            torch.manual_seed(0)
            theirs = kw_authors.authors_model(code, name, ratio)
            ours = create_model(name, conv="kw", kw_ratio=ratio, num_classes=1000)
            ours.load_state_dict(convert_state_dict(theirs.state_dict(), "kernelwarehouse"), strict=True)
            rows += compare_pair(theirs, ours, args, 1000, model=name, kw_ratio=ratio)
    title = "KernelWarehouse: fmdconv against the authors' code"
    write_report(title, "kernelwarehouse", args, rows, ("model", "kw_ratio"), started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
