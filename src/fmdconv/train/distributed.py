"""Runs over many processes: ``torchrun`` and DistributedDataParallel.

When launched by ``torchrun`` with more than one process (``WORLD_SIZE`` > 1), the process group is
initialised (NCCL on CUDA, gloo on CPU), the model is wrapped in DistributedDataParallel, each
process takes ``batch_size / world_size`` samples of each global batch through a
DistributedSampler, evaluation shards the test set without repeating samples and sums the counts,
and only rank 0 draws progress, logs and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: rank, number of processes, and its GPU index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def finish(self) -> None:
        """Wait until every process has finished the run (a barrier; nothing when single-process).

        Called by the trainer after the last collective of a run that ended well: gloo's
        worker thread releases the tensors of a finished collective after the call returns, and
        needs the GIL for it; were the process group destroyed in that instant (by the last
        reference to the DDP model going away), its destructor would wait for that thread while
        holding the GIL, and the process would hang. The barrier's round trip outlasts that
        release, and its own tensor is not a Python object.
        """
        if self.distributed and dist.is_initialized():
            dist.barrier()

    def close(self) -> None:
        """Leave the process group this context joined (a group the caller made is left alone).

        A gloo group still alive at interpreter exit can abort the process ("terminate called
        without an active exception") after the run has finished and written everything.
        """
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group described by torchrun's environment variables, if there is one.

    Without ``WORLD_SIZE`` (or with 1 process) the run is single-process. The backend is NCCL on
    CUDA and gloo on CPU; a group initialised by the caller is used as it is.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, owns_group)


def per_process_batch_size(batch_size: int, context: DistributedContext) -> int:
    """Each process's share of a global batch of ``batch_size``.

    Raises:
        ValueError: ``batch_size`` is not divisible by the number of processes.
    """
    if batch_size % context.world_size:
        raise ValueError(
            f"batch_size ({batch_size}) must be divisible by the number of processes ({context.world_size})"
        )
    return batch_size // context.world_size


def wrap_for_processes(model: nn.Module, device: torch.device, context: DistributedContext) -> nn.Module:
    """``model`` in DistributedDataParallel when the run has several processes, else itself."""
    if not context.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def all_reduce_sum(values: list[float], context: DistributedContext, device: torch.device) -> list[float]:
    """``values`` summed over the processes of the run (as they are in a single-process run)."""
    if not context.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def average_over_processes(tensors: list[torch.Tensor], context: DistributedContext) -> None:
    """Replace each tensor, in place, by its mean over the processes of the run."""
    if not context.distributed:
        return
    for tensor in tensors:
        dist.all_reduce(tensor)
        tensor /= context.world_size


def broadcast_from_main(tensors: list[torch.Tensor], context: DistributedContext) -> None:
    """Give every process rank 0's values of ``tensors`` (in place)."""
    if context.distributed:
        for tensor in tensors:
            dist.broadcast(tensor, 0)
