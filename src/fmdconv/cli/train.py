"""``fmdconv train``: train a model from a recipe, with flags that override single settings.

Every field of :class:`~fmdconv.train.Recipe` has a flag (``kernel_num`` -> ``--kernel-num``);
the recipe helpers here are shared with ``fmdconv compare`` and ``fmdconv ablate``, the flag parsers
of :mod:`fmdconv.cli._arguments` with every command.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fmdconv.cli._arguments import add_device_argument, output_folder
from fmdconv.data import DatasetFormatError, DatasetNotFoundError
from fmdconv.layers import measurement_report
from fmdconv.train.checkpoint import LAST_CHECKPOINT, load_checkpoint
from fmdconv.train.recipe import Recipe, load_recipe, packaged_recipes, recipe_field_types, saved_recipe
from fmdconv.train.trainer import train

DEFAULT_RECIPE = "fashion_mnist"
EXIT_USAGE = 2
EXIT_FAILURE = 1


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A flag parser that also accepts ``none`` for a setting that may be None."""

    def parse_optional(text: str) -> Any:
        return None if text.lower() == "none" else parse(text)

    parse_optional.__name__ = parse.__name__  # argparse names the type in its error messages
    return parse_optional


def add_recipe_arguments(
    parser: argparse.ArgumentParser, exclude: Sequence[str] = (), resumable: bool = False
) -> None:
    """Add ``--recipe`` and one flag per recipe setting (except ``exclude``) to ``parser``.

    Flags that are not given leave the recipe's value; settings that may be None accept ``none``.
    ``resumable``: the command has ``--resume``, which ``--recipe`` excludes.
    """
    parser.add_argument(
        "--recipe",
        help=f"packaged recipe ({', '.join(packaged_recipes())}) or a JSON file (default: {DEFAULT_RECIPE}"
        + ("; not with --resume)" if resumable else ")"),
    )
    group = parser.add_argument_group("recipe settings (override the recipe's values)")
    fields = {f.name: f for f in Recipe.__dataclass_fields__.values()}
    for name, (base, optional) in recipe_field_types().items():
        if name in exclude:
            continue
        flag = "--" + name.replace("_", "-")
        help_text = fields[name].metadata["help"]
        common: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if base is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif base is tuple:
            group.add_argument(flag, nargs="*", type=int, metavar="EPOCH", **common)
        else:
            parse = _optional(base) if optional else base
            group.add_argument(flag, type=parse, metavar=name.upper(), **common)


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe settings given as flags."""
    return {name: getattr(args, name) for name in Recipe.field_names() if hasattr(args, name)}


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe named by ``--recipe`` with every recipe flag that was given applied."""
    return load_recipe(args.recipe or DEFAULT_RECIPE).replace(**recipe_overrides(args))


def report_errors(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the expected failures of a command (bad settings, missing data) into a message and an
    exit code instead of a traceback."""

    @functools.wraps(run)
    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (DatasetNotFoundError, DatasetFormatError, OSError, FloatingPointError) as error:
            print(f"fmdconv {args.command}: error: {error}", file=sys.stderr)
            return EXIT_FAILURE
        except ValueError as error:
            print(f"fmdconv {args.command}: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print(f"fmdconv {args.command}: interrupted", file=sys.stderr)
            return 130

    return guarded


def sweep_exit_code(args: argparse.Namespace, failures: int, runs: int) -> int:
    """The exit code of a sweep (compare, ablate) whose report is written: 0, or 1 when runs failed."""
    if not failures:
        return 0
    print(
        f"fmdconv {args.command}: error: {failures} of {runs} runs failed (a non-finite loss or non-finite "
        "outputs; the report marks them and gives them no accuracy)",
        file=sys.stderr,
    )
    return EXIT_FAILURE


def default_out_dir(recipe: Recipe) -> Path:
    return Path("runs") / f"{recipe.dataset}-{recipe.model}-{recipe.conv}"


def _resumed_run(args: argparse.Namespace) -> tuple[Recipe, Path]:
    """The recipe and folder of a resumed run: the checkpoint's recipe with the flags given applied."""
    if args.recipe is not None:
        raise ValueError(
            "--recipe cannot be combined with --resume: a run continues with its checkpoint's recipe"
        )
    if args.resume is True and not args.out:
        raise ValueError("--resume needs --out (the run's folder) or a checkpoint path")
    checkpoint = args.out / LAST_CHECKPOINT if args.resume is True else args.resume
    saved = saved_recipe(load_checkpoint(checkpoint)["recipe"])
    return saved.replace(**recipe_overrides(args)), args.out or checkpoint.parent


@report_errors
def run_train(args: argparse.Namespace) -> int:
    if args.resume:
        recipe, out_dir = _resumed_run(args)
    else:
        recipe = recipe_from_args(args)
        out_dir = args.out or default_out_dir(recipe)
    result = train(
        recipe,
        out_dir,
        resume=args.resume,
        device=args.device,
        progress=not args.no_progress,
        tensorboard=not args.no_tensorboard,
    )
    final = result.final
    print(
        f"{out_dir}: {final['epoch']} epochs, test top-1 {final['test_top1']:.2%}, "
        f"top-5 {final['test_top5']:.2%} (best top-1 {result.best_top1:.2%} at epoch {result.best_epoch}), "
        f"{result.seconds_per_epoch:.1f} s per epoch"
    )
    measuring = measurement_report()
    if measuring.measured:  # the time the first calls of new layer signatures spent choosing
        print(measuring, file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a recipe",
        description=(
            "Train a model from a recipe (a packaged one or a JSON file); flags override single settings. "
            "Writes last.pt and best.pt (atomically, each epoch), metrics.jsonl and tensorboard/ to --out. "
            "Several processes: torchrun --nproc-per-node N -m fmdconv train ..."
        ),
    )
    add_recipe_arguments(parser, resumable=True)
    parser.add_argument(
        "--out", type=output_folder, help="output folder (default: runs/<dataset>-<model>-<conv>)"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        type=Path,
        metavar="CHECKPOINT",
        help="continue the run in --out from its last.pt, or from CHECKPOINT, with the checkpoint's recipe "
        "(only --epochs, --data-dir and --num-workers may be changed)",
    )
    add_device_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="draw no progress bars")
    parser.add_argument("--no-tensorboard", action="store_true", help="write no TensorBoard event files")
    parser.set_defaults(run=run_train)
