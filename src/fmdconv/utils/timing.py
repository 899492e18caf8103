"""One timer for everything fmdconv measures: benchmarks, profiling and the measured formulation choice.

``synchronize(device)`` waits for a device's queued work (a no-op on the CPU); ``time_call`` times one
call of a function on that device; ``time_interleaved`` times several candidates in interleaved rounds,
so a slow phase of the machine (another process, a frequency change) falls on every candidate alike.
A timing loop that repeats one function is ``time_interleaved`` with one candidate. On CUDA,
``cuda_events=True`` times the device's work between two CUDA events recorded around the call
(what a GPU benchmark of sub-millisecond calls needs: no host synchronisation inside the span).
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
    run: Callable[[], object],
    device: torch.device | str | None = None,
    clock: Clock = time.perf_counter,
    cuda_events: bool = False,
) -> float:
    """Seconds one call of ``run`` takes on ``device``, synchronised before and after.

    ``cuda_events`` (CUDA devices only; ignored elsewhere): the time between CUDA events recorded
    before and after the call instead of ``clock``.
    """
    synchronize(device)
    if cuda_events and device is not None and torch.device(device).type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start_time = clock()
    run()
    synchronize(device)
    return clock() - start_time


def time_interleaved(
    candidates: Mapping[Key, Callable[[], object]],
    repeats: int,
    device: torch.device | str | None = None,
    warmup: int = 1,
    clock: Clock = time.perf_counter,
    cuda_events: bool = False,
    before_round: Callable[[int], object] | None = None,
) -> dict[Key, list[float]]:
    """Every candidate's times over ``repeats`` interleaved rounds, after ``warmup`` untimed rounds.

    Round r runs each candidate once, starting from the r-th (in order, wrapping round), so that no
    candidate always runs first, after the same neighbour; the result maps each candidate to its
    ``repeats`` times in seconds (take the minimum or the median, as the measurement needs).
    ``before_round(r)``, if given, runs before each timed round r = 0, 1, ... (outside the timed
    calls: waiting for the machine to go quiet, reading its load). ``clock`` and ``cuda_events``:
    as :func:`time_call`.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats!r}")
    if warmup < 0:
        raise ValueError(f"warmup must be at least 0, got {warmup!r}")
    for _ in range(warmup):
        for run in candidates.values():
            run()
    times: dict[Key, list[float]] = {key: [] for key in candidates}
    order = list(candidates.items())
    for round_index in range(repeats):
        if before_round is not None:
            before_round(round_index)
        start = round_index % len(order) if order else 0
        for key, run in order[start:] + order[:start]:
            times[key].append(time_call(run, device, clock, cuda_events))
    return times
