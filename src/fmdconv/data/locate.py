"""Finding a dataset's directory among the places a user may have put it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fmdconv.data.errors import DatasetNotFoundError


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
    for directory in candidates:
        missing = [name for name in required if not (directory / name).exists()]
        if not missing:
            return directory
        problem = "does not exist" if not directory.is_dir() else f"missing {', '.join(missing)}"
        searched.append((directory, problem))
    raise DatasetNotFoundError(dataset, searched, how_to_get)
