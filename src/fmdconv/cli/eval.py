"""``fmdconv eval CHECKPOINT``: top-1/top-5 on the test split of the checkpoint's dataset, and latency."""

from __future__ import annotations

import argparse
from pathlib import Path

from fmdconv.cli._arguments import add_device_argument, int_at_least
from fmdconv.cli.train import report_errors
from fmdconv.data import build_loader
from fmdconv.profiling import measure_speed
from fmdconv.train import Recipe, build_split, evaluate, has_kernel_num, input_size, load_trained_model
from fmdconv.train.recipe import PRECISIONS
from fmdconv.utils.devices import resolve_device
from fmdconv.utils.io import dumps_json

LATENCY_WARMUP = 5


def method_label(recipe: Recipe) -> str:
    """The recipe's method as the header names it: ``od, n = 4``; ``dcd`` and ``static + se`` (no
    number of kernels)."""
    method = recipe.conv if recipe.attention is None else f"{recipe.conv} + {recipe.attention}"
    return f"{method}, n = {recipe.kernel_num}" if has_kernel_num(recipe.conv) else method


@report_errors
def run_eval(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    model, recipe, checkpoint = load_trained_model(args.checkpoint, device)
    overrides = {"data_dir": args.data_dir, "test_subset": args.test_subset, "precision": args.precision}
    recipe = recipe.replace(**{name: value for name, value in overrides.items() if value is not None})
    loader = build_loader(
        build_split(recipe, "test"), args.batch_size or recipe.eval_batch_size or recipe.batch_size, False
    )
    result = evaluate(
        model, loader, device, recipe.precision, description="test", progress=not args.no_progress
    )
    speed = None
    if args.latency_repeats:
        speed = measure_speed(
            model,
            input_size(recipe),
            args.latency_batch_size,
            "inference",
            device,
            warmup=LATENCY_WARMUP,
            repeats=args.latency_repeats,
        )
    if args.json:
        print(
            dumps_json(
                {
                    "checkpoint": str(args.checkpoint),
                    "epoch": checkpoint["epoch"],
                    "model": recipe.model,
                    "conv": recipe.conv,
                    "dataset": recipe.dataset,
                    "top1": result.top1,
                    "top5": result.top5,
                    "loss": result.loss,
                    "images": result.images,
                    "eval_seconds": result.seconds,
                    "latency": None if speed is None else speed.to_dict(),
                },
                indent=2,
            )
        )
        return 0
    print(
        f"{args.checkpoint}: {recipe.model} ({method_label(recipe)}) on {recipe.dataset}, "
        f"epoch {checkpoint['epoch']}/{recipe.epochs}"
    )
    print(
        f"top-1 {result.top1:.2%}  top-5 {result.top5:.2%}  loss {result.loss:.4f}  "
        f"({result.images} test images, {result.seconds:.1f} s, {recipe.precision})"
    )
    if speed is not None:
        print(f"latency {speed.per_sample * 1e3:.2f} ms per image: {speed.summary()}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint: top-1/top-5 and latency",
        description=(
            "Evaluate a training checkpoint (last.pt or best.pt) on the test split of its recipe's dataset "
            "and time inference. The model, its temperatures and the data settings come from the checkpoint."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by fmdconv train")
    parser.add_argument("--data-dir", help="where the dataset is, if not where the run found it")
    parser.add_argument(
        "--test-subset", type=int_at_least(1), help="evaluate on the first N test images only"
    )
    parser.add_argument(
        "--batch-size", type=int_at_least(1), help="evaluation batch size (default: the recipe's)"
    )
    parser.add_argument("--precision", choices=PRECISIONS, help="arithmetic (default: the recipe's)")
    add_device_argument(parser)
    parser.add_argument(
        "--latency-batch-size",
        type=int_at_least(1),
        default=1,
        help="images per timed forward pass (default: 1)",
    )
    parser.add_argument(
        "--latency-repeats",
        type=int_at_least(0),
        default=30,
        help="timed forward passes, 0 to skip timing (default: 30)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--no-progress", action="store_true", help="draw no progress bar")
    parser.set_defaults(run=run_eval)
