"""Compiled training steps (the recipe's ``compile``, ``fmdconv train --compile``).

:func:`compile_for_training` wraps the model the trainer steps through in ``torch.compile`` (inductor,
on the CPU and on CUDA). The trainer keeps the eager module beside it: checkpoints, evaluation,
BatchNorm re-estimation and the attention probe's logged steps use the eager module, which shares
every parameter and buffer with the compiled one, so a checkpoint's ``state_dict`` has the module's
own names (no ``_orig_mod.`` prefix) and loads into an uncompiled model. Training batches all have
one shape (the last incomplete batch is dropped), so the step compiles once, with static shapes;
the temperatures are buffers, so annealing them recompiles nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

# The torch.compile backend of compiled training steps (tests swap in a cheaper one).
BACKEND: str | Callable[..., Any] = "inductor"


def compile_for_training(model: nn.Module) -> nn.Module:
    """``model`` compiled for training steps (shapes static); its parameters stay the model's own."""
    return torch.compile(model, backend=BACKEND, dynamic=False)
