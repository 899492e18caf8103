"""Helpers shared by the layers above them (training, profiling, explaining, the command line).

Nothing here imports from the rest of fmdconv, so every package may use it.
"""

from fmdconv.utils.devices import resolve_device
from fmdconv.utils.io import atomic_path, copy_atomic, expand_path, write_text_atomic

__all__ = ["atomic_path", "copy_atomic", "expand_path", "resolve_device", "write_text_atomic"]
