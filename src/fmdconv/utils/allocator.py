"""Keep freed memory in the process: glibc malloc settings for CPU training (docs/speed.md).

A CPU training step of a dynamic network allocates and frees the same large buffers every
iteration (per-sample kernels, im2col columns, their gradients). glibc serves allocations above its
mmap threshold (128 KiB, rising to at most 32 MiB) with fresh ``mmap`` calls and returns them with
``munmap`` when they are freed, and trims the heap top beyond 128 KiB: every step then faults in,
and the kernel zeroes, the same hundreds of megabytes again (docs/design.md, section 9: as much system time
as user time). :func:`keep_freed_memory` switches that off for the calling process, with the same
effect as the environment variables ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` /
``MALLOC_TOP_PAD_`` but without them (``mallopt`` caps the mmap threshold at 32 MiB, so large blocks
are kept by disabling ``mmap`` for malloc instead). The cost: memory freed by the process stays
with it (its resident size stays at its peak) instead of going back to the system.

It changes the whole process, so only the entry points that own the process call it: the
``fmdconv`` command at start, and :class:`~fmdconv.train.Trainer` (through
:func:`keep_freed_memory_once`, unless :data:`automatic` is set to False first) when it trains on
the CPU. Importing or calling a layer leaves the allocator alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4

# mallopt(option, value): no blocks through mmap, never trim the heap, grow it 256 MiB at a time.
KEEP_FREED_MEMORY: dict[int, int] = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: -1, M_TOP_PAD: 256 * 2**20}
# Set by users to choose their own allocator settings; fmdconv then leaves the allocator alone.
_USER_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

# False: the Trainer leaves the allocator alone (the fmdconv command still keeps freed memory).
automatic = True
attempted = False


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; True if applied.

    Does nothing (returns False) off glibc, or when the environment already sets malloc options.
    """
    if platform.libc_ver()[0] != "glibc" or any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return all(mallopt(option, value) == 1 for option, value in KEEP_FREED_MEMORY.items())


def keep_freed_memory_once() -> None:
    """:func:`keep_freed_memory` the first time it is called while :data:`automatic` is True."""
    global attempted
    if automatic and not attempted:
        attempted = True
        keep_freed_memory()
