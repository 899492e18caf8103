"""Training checkpoints, written atomically, and the random-number state they carry.

A checkpoint is a ``torch.save``'d dict of plain containers and tensors (loadable with
``weights_only=True``, so loading one never runs code):

``format``, ``model`` (the unwrapped model's state dict, temperatures included), ``optimizer``,
``lr_scheduler``, ``temperature`` (the scheduler's iteration counter), ``grad_scaler`` (fp16 only),
``epoch`` (epochs completed), ``iteration`` (optimizer steps taken), ``best_top1``, ``best_epoch``,
``history`` (one record per finished epoch), ``rng`` (torch, CUDA, NumPy and Python generator
states) and ``recipe`` (the run's settings as a dict).

Every file written here goes through :func:`fmdconv.utils.io.atomic_path`, so a crash leaves the
old file or the new one, never half a file.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmdconv.utils.io import atomic_path

CHECKPOINT_FORMAT = 1
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


def rng_state() -> dict[str, Any]:
    """The states of the torch (CPU and CUDA), NumPy and Python global generators."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generator states captured by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` (with the format number added) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, temporary)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (safely: ``weights_only=True``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a folder, or the file is not an fmdconv training checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"{path} is a folder, not a checkpoint file; give a run's checkpoint, e.g. {path / 'last.pt'}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a corrupt or foreign file fails in many ways
        # torch's own message advises weights_only=False, which would run the file's code: not offered.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path} is not a checkpoint (torch.load could not read it: {reason})") from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an fmdconv training checkpoint (format {CHECKPOINT_FORMAT})")
    return state
