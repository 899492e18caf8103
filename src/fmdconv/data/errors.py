"""Errors raised by the dataset readers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not in any of the places a reader looked.

    Args:
        dataset: registry name of the dataset.
        searched: (directory, what was wrong with it) for every directory looked in.
        how_to_get: where to get the data and the layout the reader expects.

    Attributes:
        dataset: the dataset's registry name (``"cifar10"``, ...).
        searched: every directory the reader looked in, in the order it looked.
    """

    def __init__(self, dataset: str, searched: Sequence[tuple[Path, str]], how_to_get: str) -> None:
        self.dataset = dataset
        self.searched = [directory for directory, _ in searched]
        places = "\n".join(f"  - {directory}: {problem}" for directory, problem in searched)
        super().__init__(
            f"{dataset} not found. Looked in:\n{places or '  (no directory was given)'}\n{how_to_get}"
        )


class DatasetFormatError(ValueError):
    """A dataset file exists but is truncated, corrupt or not in the expected format.

    The message starts with the file's path, then says what was wrong.

    Attributes:
        path: the offending file.
    """

    def __init__(self, path: Path, problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")
