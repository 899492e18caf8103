"""File helpers: atomic writes (a crash leaves the old file or the new one, never half a file),
user paths (``~`` expanded) and strict JSON."""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def expand_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`~pathlib.Path` with a leading ``~`` (or ``~user``) expanded."""
    return Path(path).expanduser()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path``, else delete it.

    The caller creates the file at the yielded path. Its name keeps ``path``'s suffix, so writers
    that pick a format from the extension (matplotlib) still do.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary_path = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        yield temporary_path
        with open(temporary_path, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary_path, path)
    finally:
        temporary_path.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def copy_atomic(source: str | Path, destination: str | Path) -> None:
    """Copy ``source`` to ``destination`` atomically."""
    with atomic_path(destination) as temporary:
        shutil.copyfile(source, temporary)


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value


def dumps_json(value: Any, indent: int | None = None) -> str:
    """``json.dumps(value)`` with NaN and infinities written as ``null``: valid JSON, which bare
    ``NaN`` / ``Infinity`` are not."""
    return json.dumps(_finite_or_null(value), indent=indent, allow_nan=False)
