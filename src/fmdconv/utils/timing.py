"""One timer for everything fmdconv measures: benchmarks, profiling and the measured formulation choice.

``synchronize(device)`` waits for a device's queued work (a no-op on the CPU); ``time_call`` times one
call of a function on that device; ``time_interleaved`` times several candidates in interleaved rounds,
so a slow phase of the machine (another process, a frequency change) falls on every candidate alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch

Key = TypeVar("Key")
Clock = Callable[[], float]

CLOCKS: dict[str, Clock] = {"wall": time.perf_counter, "cpu": time.thread_time}


def synchronize(device: torch.device | str | None) -> None:
    """Wait until ``device`` has finished its queued work (CUDA); nothing to wait for on the CPU."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    run: Callable[[], object], device: torch.device | str | None = None, clock: Clock = time.perf_counter
) -> float:
    """Seconds one call of ``run`` takes on ``device``, synchronised before and after."""
    synchronize(device)
    start = clock()
    run()
    synchronize(device)
    return clock() - start


def time_interleaved(
    candidates: Mapping[Key, Callable[[], object]],
    repeats: int,
    device: torch.device | str | None = None,
    warmup: int = 1,
    clock: Clock = time.perf_counter,
) -> dict[Key, list[float]]:
    """Every candidate's times over ``repeats`` interleaved rounds, after ``warmup`` untimed rounds.

    Round r runs each candidate once, in order; the result maps each candidate to its ``repeats``
    times in seconds (take the minimum or the median, as the measurement needs).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats!r}")
    if warmup < 0:
        raise ValueError(f"warmup must be at least 0, got {warmup!r}")
    for _ in range(warmup):
        for run in candidates.values():
            run()
    times: dict[Key, list[float]] = {key: [] for key in candidates}
    for _ in range(repeats):
        for key, run in candidates.items():
            times[key].append(time_call(run, device, clock))
    return times
