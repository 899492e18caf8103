"""What the benchmark reads from the operating system: the machine's load and a step's peak memory.

Load: busy clock ticks of the whole machine and of this process from ``/proc/stat`` and
``/proc/self/stat``; their difference is the CPU time other processes used, recorded with each
setting because a timing taken on a busy machine means less, and :func:`wait_for_quiet` waits for
it to fall before a round.

Peak memory: the most memory one iteration adds to what the process already holds. On CUDA it is
``torch.cuda.max_memory_allocated``. On the CPU, where torch's allocator keeps no statistics and
``tracemalloc`` does not see its buffers, it is the peak resident set size (``VmHWM`` of
``/proc/self/status``, reset through ``/proc/self/clear_refs``) minus the resident size just before,
after glibc's ``malloc_trim`` (through ctypes) has returned freed heap memory to the system; it
includes everything the iteration touches (activations, gradients, per-sample kernels, oneDNN
workspaces). Without ``/proc`` (not Linux) none of this is measured and the functions say so by
returning None.
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from collections.abc import Callable

import torch


def cpu_jiffies() -> tuple[int, int] | None:
    """Busy clock ticks of the whole machine and of this process, or None without /proc."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        with open("/proc/self/stat") as own:
            own_fields = own.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    idle = fields[3] + fields[4]
    return sum(fields) - idle, int(own_fields[11]) + int(own_fields[12])


def other_processes_cpu(start: tuple[int, int] | None) -> float | None:
    """CPU seconds used by other processes since ``start`` (a :func:`cpu_jiffies` reading)."""
    end = cpu_jiffies()
    if start is None or end is None:
        return None
    ticks = (end[0] - start[0]) - (end[1] - start[1])
    return max(ticks, 0) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait_s: float, interval_s: float = 0.5, busy_limit: float = 0.05) -> float:
    """Wait (at most ``max_wait_s``) until other processes use under ``busy_limit`` of one CPU.

    Each check lasts ``interval_s``. Returns the seconds waited; without /proc it returns at once.
    """
    started = time.perf_counter()
    while time.perf_counter() - started < max_wait_s:
        reading = cpu_jiffies()
        if reading is None:
            break
        time.sleep(interval_s)
        if (other_processes_cpu(reading) or 0.0) < busy_limit * interval_s:
            break
    return time.perf_counter() - started


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    if match is None:
        raise OSError(f"{field} not in /proc/self/status")
    return int(match.group(1))


def _cpu_peak_memory_mib(run: Callable[[], object]) -> float | None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        before = _status_kib("VmRSS")
    except OSError:
        run()
        return None
    run()
    return (_status_kib("VmHWM") - before) / 1024


def peak_memory_mib(run: Callable[[], object], device: torch.device) -> float | None:
    """Run ``run()`` once; the peak memory it added on ``device``, in MiB (None where not measurable)."""
    if device.type != "cuda":
        return _cpu_peak_memory_mib(run)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20
