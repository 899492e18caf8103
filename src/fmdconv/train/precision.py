"""The arithmetic of a run (the recipe's ``precision``): fp32, or autocast to bf16 or fp16."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from fmdconv.train.recipe import PRECISIONS


def check_precision(device: torch.device, precision: str) -> None:
    """Raise a ValueError if ``precision`` is unknown or cannot run on ``device`` (fp16 needs CUDA)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA device (got {device}); use bf16 on CPU")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of ``precision`` (``fp32``: none; ``bf16``; ``fp16``, CUDA only)."""
    check_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
