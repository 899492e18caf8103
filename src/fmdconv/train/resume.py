"""Resuming a run: the checkpoint it continues from, and the settings it may change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fmdconv.train.checkpoint import LAST_CHECKPOINT, load_checkpoint
from fmdconv.train.recipe import Recipe, recipe_differences, saved_recipe

# Settings a resumed run may change: where the data is, how it is loaded, and how long to train.
RESUMABLE_OVERRIDES = ("data_dir", "num_workers", "epochs", "compile")


def checkpoint_to_resume(out_dir: Path, resume: bool | str | Path) -> dict[str, Any] | None:
    """The checkpoint a run in ``out_dir`` continues from: None for a fresh run (``resume`` False),
    ``out_dir/last.pt`` for True, else the checkpoint at path ``resume``.

    Raises:
        ValueError: a fresh run into a folder that holds one, or an unreadable checkpoint.
    """
    last = out_dir / LAST_CHECKPOINT
    if resume is False:
        if last.exists():
            raise ValueError(
                f"{out_dir} already holds a run ({last}); resume it (--resume) or choose another --out"
            )
        return None
    return load_checkpoint(last if resume is True else Path(resume))


def resumed_recipe(checkpoint: dict[str, Any], requested: Recipe) -> Recipe:
    """The checkpoint's recipe, with the changes a resumed run allows taken from ``requested``.

    Raises:
        ValueError: ``requested`` differs in another setting, or has fewer epochs than were trained.
    """
    saved = saved_recipe(checkpoint["recipe"])
    if requested.epochs < checkpoint["epoch"]:
        raise ValueError(
            f"cannot resume with epochs={requested.epochs}: the checkpoint has already trained "
            f"{checkpoint['epoch']} epochs; give --epochs {checkpoint['epoch']} or more, or train a new "
            "run in another --out"
        )
    changed = recipe_differences(saved, requested, ignore=RESUMABLE_OVERRIDES)
    if changed:
        raise ValueError(
            f"cannot resume with different {', '.join(changed)} (the checkpoint's recipe has "
            + ", ".join(f"{name}={value!r}" for name, (value, _) in changed.items())
            + f"); only {', '.join(RESUMABLE_OVERRIDES)} may change"
        )
    return saved.replace(**{name: getattr(requested, name) for name in RESUMABLE_OVERRIDES})
