"""The one place where a device name given by a user is checked."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """The device named by ``device``, checked to exist on this machine.

    ``None`` or ``"auto"``: CUDA if available, else the CPU; a bare ``"cuda"`` gets the process's GPU
    (``local_rank``).

    Raises:
        ValueError: ``device`` is not a device name, or names a CUDA/MPS device this machine lacks.
    """
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto; got {device!r}") from None
    name = str(device)
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {name!r} is not available: no CUDA device on this machine")
        if resolved.index is None:
            resolved = torch.device("cuda", local_rank)
        if resolved.index >= count:
            raise ValueError(f"device {name!r} is not available: this machine has {count} CUDA device(s)")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} is not available: no MPS device on this machine")
    return resolved
