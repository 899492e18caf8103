"""``fmdconv cam``: the FMDConv paper's Figure 4 for a trained model, as a PNG grid.

Examples::

    fmdconv cam runs/fmd/best.pt --from-dataset 4 --out grid.png
    fmdconv cam runs/fmd/best.pt shirt.png boot.jpg --layer layer3 --out grid.png

One row per image: the original, then the Grad-CAM++ map with each attention of the model alone
(input, kernel, output; ODConv adds spatial) and with all of them (see docs/explain.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from fmdconv.cli._arguments import output_file
from fmdconv.cli.train import report_errors
from fmdconv.explain import (
    ImageBatch,
    default_target_layer,
    explain_attentions,
    images_from_dataset,
    images_from_files,
    save_attention_grid,
)
from fmdconv.train import load_trained_model
from fmdconv.train.recipe import Recipe

DEFAULT_DISPLAY_SIZE = 112


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cam",
        help="Grad-CAM++ grid of a trained model under each attention (Figure 4)",
        description=(
            "Write a PNG grid: one row per image (files, and/or the first N test images of the "
            "checkpoint's dataset); columns: the original, the Grad-CAM++ map with each attention "
            "alone (the others counting as 1), and with all attentions."
        ),
    )
    parser.add_argument(
        "checkpoint", type=Path, help="checkpoint written by fmdconv train (last.pt, best.pt)"
    )
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    parser.add_argument(
        "--from-dataset",
        type=int,
        default=0,
        metavar="N",
        help="also explain the first N test images of the checkpoint's dataset",
    )
    parser.add_argument(
        "--layer",
        default=None,
        help="target module name (default: the last dynamic block whose maps are larger than 1x1 for "
        "these images, e.g. layer4.1; a 1x1 map is constant and locates nothing)",
    )
    parser.add_argument(
        "--target", type=int, default=None, help="class to explain (default: each image's predicted class)"
    )
    parser.add_argument("--data-dir", default=None, help="dataset folder (default: the checkpoint's recipe)")
    parser.add_argument(
        "--display-size",
        type=int,
        default=DEFAULT_DISPLAY_SIZE,
        help=f"side in pixels each picture is drawn at (default {DEFAULT_DISPLAY_SIZE})",
    )
    parser.add_argument("--out", type=output_file, default=Path("cam_grid.png"), help="PNG to write")
    parser.set_defaults(run=run)


def _images(args: argparse.Namespace, recipe: Recipe) -> ImageBatch:
    if args.from_dataset < 0:
        raise ValueError(f"--from-dataset must be >= 0; got {args.from_dataset}")
    if not args.images and not args.from_dataset:
        raise ValueError("give image files, --from-dataset N, or both")
    batches = []
    if args.images:
        batches.append(images_from_files(args.images, recipe.dataset, recipe.image_size))
    if args.from_dataset:
        data_dir = args.data_dir or recipe.data_dir
        batches.append(images_from_dataset(recipe.dataset, args.from_dataset, recipe.image_size, data_dir))
    return ImageBatch(
        inputs=torch.cat([batch.inputs for batch in batches]),
        pictures=torch.cat([batch.pictures for batch in batches]),
        names=tuple(name for batch in batches for name in batch.names),
        labels=tuple(label for batch in batches for label in batch.labels),
    )


def _row_label(name: str, label: int | None, explained: int, chosen: bool) -> str:
    truth = "" if label is None else f"label {label}, "
    return f"{name}\n{truth}{'target' if chosen else 'pred'} {explained}"


@report_errors
def run(args: argparse.Namespace) -> int:
    model, recipe, _ = load_trained_model(args.checkpoint)
    batch = _images(args, recipe)
    print(
        f"fmdconv cam: {recipe.model} ({recipe.conv}, {recipe.dataset}), {len(batch.names)} image(s)",
        file=sys.stderr,
    )
    result = explain_attentions(model, batch.inputs, layer=args.layer, target=args.target)
    labels = [
        _row_label(name, label, int(explained), args.target is not None)
        for name, label, explained in zip(batch.names, batch.labels, result.targets, strict=True)
    ]
    out = save_attention_grid(result, batch.pictures, labels, args.out, display_size=args.display_size)
    height, width = result.map_size
    chosen = "" if args.layer else ", the last dynamic block with maps larger than 1x1"
    if args.layer is None and result.layer != default_target_layer(model):
        chosen += f" ({default_target_layer(model)}'s are 1x1 at this input size)"
    print(
        f"fmdconv cam: layer {result.layer} ({height}x{width} maps{chosen}), "
        f"columns {', '.join(result.variants)}; wrote {out}",
        file=sys.stderr,
    )
    if (height, width) == (1, 1):
        print(
            f"fmdconv cam: warning: layer {result.layer}'s maps are 1x1 at this input size: every map is "
            f"constant and drawn as zeros; pick an earlier layer (or leave --layer out)",
            file=sys.stderr,
        )
    return 0
