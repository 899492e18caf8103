"""fmdconv's FDConv against the authors' code, in one process: training step and batch-1 inference.

Usage (from the repository root, on a quiet machine; ``AUTHORS`` a checkout or ``git archive``
export of github.com/Linwei-Chen/FDConv)::

    python benchmarks/bench_fdconv.py AUTHORS [--models resnet18 resnet50] [--kernel-num 64]
        [--image-size 224] [--batch-size 32] [--repeats 10] [--threads N] [--out-dir DIR]

For each model it builds the authors' ResNet (fmdconv's static ResNet with the authors' ``FDConv``
in every block convolution, as their ``ResNet_FDConv``: stem and downsample static) and fmdconv's
``create_model(name, conv="fd")``, gives ours the authors' weights (``fmdconv.compat``), checks the
outputs agree, then times both (:mod:`authors_comparison`): the table and the ratios authors /
fmdconv (above 1: fmdconv faster) go to ``benchmarks/results/<machine>/fdconv.{json,md}``.
Without the authors' code it says so and exits. ``--quick`` runs a width-1/4 ResNet-18 at 32x32
with one repeat, to check the script.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from authors_comparison import add_common_arguments, compare_pair, start, write_report
from authors_fdconv import AUTHORS_FILE, authors_model, load_authors_fdconv
from fmdconv import create_model
from fmdconv.compat import convert_state_dict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, "checkout of Linwei-Chen/FDConv")
    parser.add_argument(
        "--kernel-num", type=int, default=64, help="frequency groups (their detection models: 64)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if not start(args, AUTHORS_FILE):
        return 0
    options: dict[str, object] = {"num_classes": 1000}
    if args.quick:
        args.models, args.image_size, args.batch_size, args.repeats, args.kernel_num = (
            ["resnet18"],
            32,
            2,
            1,
            4,
        )
        options.update(width=0.25, stem="cifar")
    authors = load_authors_fdconv(args.authors)
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        theirs = authors_model(authors, name, args.kernel_num, **options)
        ours = create_model(name, conv="fd", kernel_num=args.kernel_num, **options)
        ours.load_state_dict(convert_state_dict(theirs.state_dict(), "fdconv"), strict=True)
        rows += compare_pair(theirs, ours, args, 1000, model=name, kernel_num=args.kernel_num)
    title = "FDConv: fmdconv against the authors' code"
    write_report(title, "fdconv", args, rows, ("model", "kernel_num"), started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
