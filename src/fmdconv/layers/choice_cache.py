"""Where the measured formulation choices live: in the process, and in one file per user, by machine.

The measured choice (:func:`fmdconv.layers.formulations.select_formulation`) times the exact
formulations of a call signature once and keeps the fastest. This module keeps those choices:

- in the process, as a dict from the signature (a string: :func:`signature`) to the formulation;
- on disk, in ``formulation-choices.json`` in the user's cache directory (``$FMDCONV_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/fmdconv``, else ``~/.cache/fmdconv``), so that a second process on the same
  machine measures nothing. The file holds one table per machine (:func:`machine_key`: the CPU model
  and instruction-set flags, the GPU's name on CUDA, the torch version), so one home directory
  shared by several machines keeps each one's choices apart. It is read once per process and
  rewritten whole after each new choice (a temporary file, then ``os.replace``: never half a file);
  a file that is not valid JSON or not this format is ignored and replaced, and a directory that
  cannot be written leaves the choices in the process only.

Measuring is on by default on every device, like ``torch.backends.cudnn.benchmark``;
``FMDCONV_MEASURE=0`` in the environment or :func:`set_benchmark` (False) turns it off, and the
hand rule decides. :func:`measurement_report` says how much time measuring has cost this process.

Nothing here imports the formulations, so they can import it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fmdconv.utils.machine import cpu_flags, cpu_model

CACHE_DIR_ENV = "FMDCONV_CACHE_DIR"
MEASURE_ENV = "FMDCONV_MEASURE"
CACHE_FILE = "formulation-choices.json"
FILE_FORMAT = "fmdconv formulation choices"
FILE_VERSION = 1

# None: measure unless FMDCONV_MEASURE=0; True / False: set by set_benchmark, the environment aside.
benchmark: bool | None = None


@dataclass
class MeasurementReport:
    """What the measured choice has done in this process (see :func:`measurement_report`).

    Attributes:
        enabled: whether calls measure now.
        measured: signatures timed in this process.
        seconds: wall-clock seconds spent timing them (the candidates' runs, warm-up included).
        loaded: lookups that the cache file answered instead of a measurement.
        path: the cache file (it may not exist yet).
    """

    enabled: bool
    measured: int
    seconds: float
    loaded: int
    path: Path

    def __str__(self) -> str:
        state = "on" if self.enabled else "off"
        return (
            f"measured formulation choice {state}: {self.measured} signature(s) timed in "
            f"{self.seconds:.2f} s, {self.loaded} taken from {self.path}"
        )


class ChoiceCache:
    """The process's measured choices and their file (one instance: :data:`CHOICES`)."""

    def __init__(self) -> None:
        self._choices: dict[str, str] = {}
        self._loaded_from: Path | None = None
        self._measured_here: set[str] = set()
        self.generation = 0  # bumped whenever a cached choice may no longer hold
        self.measured = 0
        self.seconds = 0.0
        self.loaded = 0

    def _table(self) -> dict[str, str]:
        """The choices for this process, read from the cache file on first use (and when it moved)."""
        path = cache_path()
        if path != self._loaded_from:
            self._loaded_from = path
            self._choices = dict(_read(path)["machines"].get(machine_key(), {}))
            self.generation += 1
        return self._choices

    def get(self, key: str) -> str | None:
        chosen = self._table().get(key)
        if chosen is not None and key not in self._measured_here:
            self.loaded += 1
        return chosen

    def put(self, key: str, formulation: str, seconds: float) -> None:
        """Keep a new measured choice and rewrite the cache file with it."""
        self._table()[key] = formulation
        self._measured_here.add(key)
        self.measured += 1
        self.seconds += seconds
        self._write()

    def choices(self) -> dict[str, str]:
        return dict(self._table())

    def clear(self) -> None:
        """Forget every choice of this machine, in the process and in the cache file."""
        self._table().clear()
        self.generation += 1
        if cache_path().exists():
            self._write()

    def _write(self) -> None:
        """Rewrite the cache file with this machine's choices (merged with those another process wrote
        meanwhile; none after :meth:`clear`), every other machine's as they are."""
        path = cache_path()
        content = _read(path)
        machines = content["machines"]
        if self._choices:
            machines[machine_key()] = dict(
                sorted({**machines.get(machine_key(), {}), **self._choices}.items())
            )
        else:
            machines.pop(machine_key(), None)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(content, indent=1) + "\n")
            os.replace(temporary, path)
        except OSError:  # a read-only or full cache directory: the choices stay in the process
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)


CHOICES = ChoiceCache()


def cache_dir() -> Path:
    """``$FMDCONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/fmdconv``, else ``~/.cache/fmdconv``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fmdconv"


def cache_path() -> Path:
    """The file of measured choices (see the module docstring)."""
    return cache_dir() / CACHE_FILE


def _read(path: Path) -> dict:
    """The cache file's content in this format, or an empty one (missing, corrupt or foreign file)."""
    empty = {"format": FILE_FORMAT, "version": FILE_VERSION, "machines": {}}
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return empty
    if (
        not isinstance(content, dict)
        or content.get("format") != FILE_FORMAT
        or content.get("version") != FILE_VERSION
        or not isinstance(content.get("machines"), dict)
    ):
        return empty
    machines = {
        machine: {key: value for key, value in table.items() if isinstance(value, str)}
        for machine, table in content["machines"].items()
        if isinstance(table, dict)
    }
    return {**empty, "machines": machines}


@functools.cache
def machine_key() -> str:
    """The machine a choice was measured on: the GPU's name where CUDA is available, the CPU model
    and instruction-set flags, the torch version (one string)."""
    parts = [cpu_model(), "+".join(cpu_flags()) or "flags unknown", f"torch {torch.__version__}"]
    if torch.cuda.is_available():
        parts.insert(0, torch.cuda.get_device_name())
    return " | ".join(parts)


def signature(parts: tuple[object, ...]) -> str:
    """The cache key of a call signature: its parts, with torch's thread count, as one string."""
    return repr((*parts, torch.get_num_threads()))


def set_benchmark(enabled: bool | None) -> None:
    """Measure the formulation of ``"auto"`` layers (True), use the hand rule (False), or follow
    ``FMDCONV_MEASURE`` (None: measure unless it is ``0``).

    Like ``torch.backends.cudnn.benchmark``; choices already measured stay cached (see
    :func:`clear_benchmark_cache`).
    """
    global benchmark
    if enabled is not None and not isinstance(enabled, bool):
        raise ValueError(f"enabled must be True, False or None, got {enabled!r}")
    benchmark = enabled
    CHOICES.generation += 1


def benchmark_enabled() -> bool:
    """Whether ``"auto"`` measures: :func:`set_benchmark`'s setting, else ``FMDCONV_MEASURE`` != 0."""
    if benchmark is not None:
        return benchmark
    return os.environ.get(MEASURE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def clear_benchmark_cache() -> None:
    """Forget every measured choice of this machine, in the process and in the cache file (the
    next call of each signature measures again). Deleting the file forgets every machine's."""
    CHOICES.clear()


def benchmark_choices() -> dict[str, str]:
    """A copy of this machine's measured choices: call signature -> formulation."""
    return CHOICES.choices()


def measurement_report() -> MeasurementReport:
    """How many signatures this process measured, in how many seconds, and how many the file gave."""
    return MeasurementReport(
        enabled=benchmark_enabled(),
        measured=CHOICES.measured,
        seconds=CHOICES.seconds,
        loaded=CHOICES.loaded,
        path=cache_path(),
    )
