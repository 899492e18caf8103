"""DataLoaders for training and evaluation, single-process or distributed."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


class DistributedEvalSampler(Sampler[int]):
    """Deal the indices of a dataset to the ranks in turn, without padding or repeating any.

    Rank ``r`` of ``R`` gets indices ``r, r + R, r + 2R, ...``, so the ranks together see every
    sample exactly once (``DistributedSampler`` instead repeats samples to give every rank the same
    count, which biases evaluation metrics). Ranks may get one sample more than others: sum counts
    across ranks rather than averaging per-rank means.

    Args:
        length: number of samples in the dataset.
        num_replicas: number of ranks; defaults to the process group's world size.
        rank: this process's rank; defaults to the process group's rank.
    """

    def __init__(self, length: int, num_replicas: int | None = None, rank: int | None = None) -> None:
        self.num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
        self.rank = dist.get_rank() if rank is None else rank
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ValueError(
                f"rank must be in [0, num_replicas) with num_replicas >= 1, got rank={self.rank}, "
                f"num_replicas={self.num_replicas}"
            )
        self.length = length

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))


def build_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    distributed: bool = False,
    seed: int = 0,
    drop_last: bool | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader that shuffles for training and keeps the dataset's order for evaluation.

    Shuffling uses a generator seeded with ``seed`` (plus the rank when distributed), which also
    seeds the workers, so a run is reproducible given ``seed`` and, for ``num_workers=0``, the
    global ``torch.manual_seed`` that the random transforms draw from.

    Args:
        dataset: a map-style dataset.
        batch_size: samples per batch (per process when distributed).
        train: shuffle, and by default drop the last incomplete batch.
        num_workers: worker processes; when > 0 they persist across epochs.
        distributed: shard across the ranks of the initialised process group: training uses
            ``DistributedSampler`` (call ``loader.sampler.set_epoch(epoch)`` every epoch to reshuffle),
            evaluation uses ``DistributedEvalSampler`` (every sample exactly once).
        seed: seed of the shuffling.
        drop_last: drop the last incomplete batch; None means "if training".
        pin_memory: pin batches in page-locked memory for faster copies to a GPU.

    Raises:
        ValueError: ``batch_size`` < 1 or ``num_workers`` < 0.
        RuntimeError: ``distributed`` without an initialised process group.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    drop_last = train if drop_last is None else drop_last
    sampler: Sampler[int] | None = None
    rank = 0
    if distributed:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "distributed=True needs torch.distributed.init_process_group() to have been called"
            )
        rank = dist.get_rank()
        if train:
            sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=drop_last)
        else:
            sampler = DistributedEvalSampler(len(dataset))  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train if sampler is None else None,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed + rank),
        drop_last=drop_last,
        pin_memory=pin_memory,
    )
