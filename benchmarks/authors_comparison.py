"""fmdconv's model against the authors' code in one process: what ``bench_fdconv.py`` and
``bench_kernelwarehouse.py`` share.

Each script builds pairs of networks (the authors' and fmdconv's, the same weights through
``fmdconv.compat``), checks that their outputs agree, then :func:`compare_pair` times, interleaved
(:func:`fmdconv.utils.timing.time_interleaved`): ``train``, forward + backward + SGD step at the
batch size; ``infer``, a batch-1 forward in eval mode without gradients. :func:`write_report`
prints the table and writes it as JSON and Markdown to ``benchmarks/results/<machine>/<stem>.*``
(the machine named as by ``fmdconv bench``, :mod:`fmdconv.utils.machine`). The ratio is authors /
fmdconv: above 1, fmdconv is faster.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fmdconv.profiling.bench_report import write_result_files
from fmdconv.utils.machine import machine_line, machine_record
from fmdconv.utils.timing import time_interleaved

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("train", "infer")
COLUMNS = ("mode", "batch", "authors (s)", "fmdconv (s)", "authors / fmdconv", "output diff")


def training_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """One SGD step of ``model`` on ``images``, in training mode."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def inference(model: nn.Module, image: torch.Tensor) -> Callable[[], None]:
    """One forward pass of ``model`` on ``image`` in eval mode, without gradients."""

    def run() -> None:
        model.eval()
        with torch.no_grad():
            model(image)

    return run


def add_common_arguments(parser: argparse.ArgumentParser, authors_help: str) -> None:
    """The authors' folder and the sizes every comparison takes."""
    parser.add_argument("authors", type=Path, help=authors_help)
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32, help="of the training step (inference: 1)")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds (after one warm-up round)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks the script")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="folder of the JSON and Markdown results (default: benchmarks/results/<machine>)",
    )


def start(args: argparse.Namespace, authors_file: str) -> bool:
    """Set the threads; False (with a message) when the authors' code is not at ``args.authors``."""
    if not (args.authors / authors_file).is_file():
        print(
            f"skipped: no {authors_file} under {args.authors} (the authors' code is needed)", file=sys.stderr
        )
        return False
    warnings.simplefilter("ignore")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return True


def compare_pair(
    theirs: nn.Module, ours: nn.Module, args: argparse.Namespace, num_classes: int, **labels: Any
) -> list[dict[str, Any]]:
    """Time ``theirs`` against ``ours`` (equal weights): one row per mode, with ``labels``.

    Each row holds the medians, the ratio authors / fmdconv and the largest output difference
    relative to the largest output (eval mode, batch 2).
    """
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    targets = torch.randint(0, num_classes, (args.batch_size,))
    theirs.eval(), ours.eval()
    with torch.no_grad():
        expected, got = theirs(images[:2]), ours(images[:2])
    difference = ((got - expected).abs().max() / expected.abs().max()).item()
    candidates = {
        ("train", "authors"): training_step(theirs, images, targets),
        ("train", "fmdconv"): training_step(ours, images, targets),
        ("infer", "authors"): inference(theirs, images[:1]),
        ("infer", "fmdconv"): inference(ours, images[:1]),
    }
    times = time_interleaved(candidates, args.repeats, warmup=1)
    medians = {key: statistics.median(values) for key, values in times.items()}
    return [
        {
            **labels,
            "mode": mode,
            "batch": args.batch_size if mode == "train" else 1,
            "authors_s": medians[mode, "authors"],
            "fmdconv_s": medians[mode, "fmdconv"],
            "ratio": medians[mode, "authors"] / medians[mode, "fmdconv"],
            "authors_times_s": times[mode, "authors"],
            "fmdconv_times_s": times[mode, "fmdconv"],
            "max_relative_difference": difference,
        }
        for mode in MODES
    ]


def markdown(title: str, results: dict[str, Any], label_keys: tuple[str, ...]) -> str:
    """The results as a Markdown table (one row per network and mode)."""
    settings = results["settings"]
    lines = [
        f"# {title}",
        "",
        f"Machine: {machine_line(results['machine'])}. {settings['image_size']}x{settings['image_size']}, "
        f"training step at batch {settings['batch_size']}, inference at batch 1, median of "
        f"{settings['repeats']} interleaved rounds after one warm-up; {results['wall_s']:.0f} s in all. "
        "Ratio: the authors' time / fmdconv's (above 1: fmdconv faster).",
        "",
        "| " + " | ".join([*label_keys, *COLUMNS]) + " |",
        "|" + "---|" * (len(label_keys) + len(COLUMNS)),
    ]
    for row in results["results"]:
        cells = [str(row[key]) for key in label_keys] + [row["mode"], str(row["batch"])]
        cells += [f"{row['authors_s']:.4f}", f"{row['fmdconv_s']:.4f}", f"{row['ratio']:.2f}x"]
        cells.append(f"{row['max_relative_difference']:.1e}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(
    title: str,
    stem: str,
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    label_keys: tuple[str, ...],
    started: float,
) -> tuple[Path, Path]:
    """Print the table and write ``<stem>.json`` and ``<stem>.md`` (a quick run: ``<stem>-quick``)."""
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    results = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_record(),
        "torch": torch.__version__,
        "wall_s": time.perf_counter() - started,
        "settings": settings,
        "results": rows,
    }
    text = markdown(title, results, label_keys)
    print(text, end="")
    folder = args.out_dir or RESULTS / results["machine"]["slug"]
    return write_result_files(results, text, folder, f"{stem}-quick" if args.quick else stem)
