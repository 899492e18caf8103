"""The dataset splits every reader accepts."""

from __future__ import annotations

from typing import Literal

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")


def check_split(split: str) -> Split:
    """Return ``split`` if it names a known split, else raise ValueError listing the accepted ones."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    return split  # type: ignore[return-value]
