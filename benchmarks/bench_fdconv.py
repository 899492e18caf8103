"""fmdconv's FDConv against the authors' code, in one process: training step and batch-1 inference.

Usage (from the repository root, on a quiet machine; ``AUTHORS`` a checkout or ``git archive``
export of github.com/Linwei-Chen/FDConv)::

    python benchmarks/bench_fdconv.py AUTHORS [--models resnet18 resnet50] [--kernel-num 64]
        [--image-size 224] [--batch-size 32] [--repeats 10] [--threads N] [--out FILE.json]

For each model it builds the authors' ResNet (fmdconv's static ResNet with the authors' ``FDConv``
in every block convolution, as their ``ResNet_FDConv``: stem and downsample static) and fmdconv's
``create_model(name, conv="fd")``, gives ours the authors' weights (``fmdconv.compat``), checks the
outputs agree, then times, interleaved (:func:`fmdconv.utils.timing.time_interleaved`):
``train``, forward + backward + SGD step at ``--batch-size``; ``infer``, a batch-1 forward in eval
mode without gradients. Prints a table and the ratios authors / fmdconv (above 1: fmdconv faster);
``--smoke`` runs a width-1/4 ResNet-18 at 32x32 with one repeat, to check the script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from authors_fdconv import authors_model, load_authors_fdconv
from fmdconv import create_model
from fmdconv.compat import convert_state_dict
from fmdconv.utils.timing import time_interleaved


def training_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def inference(model: nn.Module, image: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        model.eval()
        with torch.no_grad():
            model(image)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("authors", help="checkout of Linwei-Chen/FDConv")
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument(
        "--kernel-num", type=int, default=64, help="frequency groups (their detection models: 64)"
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks the script")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    options: dict[str, object] = {"num_classes": 1000}
    if args.smoke:
        args.models, args.image_size, args.batch_size, args.repeats, args.kernel_num = (
            ["resnet18"],
            32,
            2,
            1,
            4,
        )
        options.update(width=0.25, stem="cifar")
    authors = load_authors_fdconv(args.authors)
    results = []
    for name in args.models:
        torch.manual_seed(0)
        theirs = authors_model(authors, name, args.kernel_num, **options)
        ours = create_model(name, conv="fd", kernel_num=args.kernel_num, **options)
        ours.load_state_dict(convert_state_dict(theirs.state_dict(), "fdconv"), strict=True)
        images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
        labels = torch.randint(0, 1000, (args.batch_size,))
        image = images[:1]
        theirs.eval(), ours.eval()
        with torch.no_grad():
            expected, got = theirs(images[:2]), ours(images[:2])
        difference = ((got - expected).abs().max() / expected.abs().max()).item()
        candidates = {
            ("train", "authors"): training_step(theirs, images, labels),
            ("train", "fmdconv"): training_step(ours, images, labels),
            ("infer", "authors"): inference(theirs, image),
            ("infer", "fmdconv"): inference(ours, image),
        }
        times = time_interleaved(candidates, args.repeats, warmup=1)
        medians = {key: statistics.median(values) for key, values in times.items()}
        for mode in ("train", "infer"):
            row = {
                "model": name,
                "mode": mode,
                "batch": args.batch_size if mode == "train" else 1,
                "authors_s": medians[mode, "authors"],
                "fmdconv_s": medians[mode, "fmdconv"],
                "ratio": medians[mode, "authors"] / medians[mode, "fmdconv"],
                "max_relative_difference": difference,
            }
            results.append(row)
    print(
        f"kernel_num {args.kernel_num}, {args.image_size}x{args.image_size}, "
        f"threads {torch.get_num_threads()}"
    )
    print("model     mode   batch  authors (s)  fmdconv (s)  authors/fmdconv  output diff")
    for row in results:
        print(
            f"{row['model']:<9} {row['mode']:<6} {row['batch']:>5}  {row['authors_s']:>11.4f}  "
            f"{row['fmdconv_s']:>11.4f}  {row['ratio']:>15.2f}  {row['max_relative_difference']:.1e}"
        )
    if args.out is not None:
        args.out.write_text(
            json.dumps({"settings": vars(args) | {"out": str(args.out)}, "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
