"""Seeds of a run: the global generators at its start, and each epoch's data order.

The data order of epoch e depends only on ``(seed, e)`` (the training loader is rebuilt each epoch
with :func:`epoch_seed`), which is what lets a resumed run compute exactly what the uninterrupted
run computed.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for epoch ``epoch``'s data order, depending only on ``(seed, epoch)``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
