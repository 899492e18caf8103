"""Finding a dataset's directory among the places a user may have put it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fmdconv.data.errors import DatasetNotFoundError
from fmdconv.utils.io import expand_path


def find_dataset_dir(
    dataset: str, candidates: Sequence[Path], required: Sequence[str], how_to_get: str
) -> Path:
    """Return the first directory of ``candidates`` that holds every entry named in ``required``.

    Args:
        dataset: registry name of the dataset, used in the error message.
        candidates: directories to try, in order.
        required: file or folder names, relative to a candidate, that must all exist.
        how_to_get: where to get the data and the expected layout, appended to the error message.

    Raises:
        DatasetNotFoundError: no candidate holds every required entry; the message lists each
            candidate and what it lacks.
    """
    searched: list[tuple[Path, str]] = []
    for directory in map(expand_path, candidates):
        missing = [name for name in required if not (directory / name).exists()]
        if not missing:
            return directory
        searched.append((directory, _what_is_wrong(directory, missing)))
    raise DatasetNotFoundError(dataset, searched, how_to_get)


def _what_is_wrong(directory: Path, missing: Sequence[str]) -> str:
    """Why ``directory`` does not hold a dataset that lacks ``missing`` there."""
    if directory.is_dir():
        return f"missing {', '.join(missing)}"
    if directory.exists():
        return "is a file, not a directory"
    existing = next(parent for parent in directory.parents if parent.exists())
    return (
        "does not exist" if existing.is_dir() else f"does not exist ({existing} is a file, not a directory)"
    )
