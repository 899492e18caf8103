"""Flag parsers shared by the sub-commands: numbers with a lower bound, devices, output places.

Each parser checks its flag when the command line is parsed, so a bad value is a usage error (exit
2) that names the flag, before any work starts.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from fmdconv.utils.devices import resolve_device


def int_at_least(minimum: int) -> Callable[[str], int]:
    """A flag parser for ints >= ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its error messages
    return parse


def number_at_least(minimum: float) -> Callable[[str], float]:
    """A flag parser for numbers >= ``minimum``."""

    def parse(text: str) -> float:
        value = float(text)
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"must be a number >= {minimum:g}, got {text}")
        return value

    parse.__name__ = "number"  # argparse names the type in its error messages
    return parse


def device_name(text: str) -> str:
    """A flag parser for ``--device``: a device this machine has (``auto``: CUDA if available)."""
    try:
        resolve_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _writable_place(path: Path) -> None:
    """Raise ArgumentTypeError unless ``path`` (a folder, existing or to be created) can be written in."""
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file, not a folder")
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {existing} (permission denied)")


def output_folder(text: str) -> Path:
    """A flag parser for an output folder: a folder, or a place where one can be created."""
    path = Path(text).expanduser()
    _writable_place(path)
    return path


def output_file(text: str) -> Path:
    """A flag parser for an output file: not a folder, in a folder that exists or can be created."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give a file name")
    _writable_place(path.parent)
    return path


def add_device_argument(
    parser: argparse.ArgumentParser, default: str | None = None, described: str | None = None
) -> None:
    """Add ``--device``, checked at parse time against the devices this machine has.

    ``described``: what the help calls the default (by default ``default``, or "cuda if available").
    """
    parser.add_argument(
        "--device",
        type=device_name,
        default=default,
        help="cpu, cuda, cuda:1, ... (default: " + (described or default or "cuda if available") + ")",
    )
