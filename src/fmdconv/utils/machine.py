"""What a measurement ran on: :func:`machine_record`, :func:`machine_slug` and :func:`machine_line`.

A time means little without its machine, so every benchmark file and training report names it: the
CPU model and the instruction-set flags that decide which kernels oneDNN and inductor use (AVX2,
AVX-512, AMX), the logical CPU count, torch's thread count, the torch version, and the GPU when the
measurement ran on CUDA. :func:`machine_slug` turns that into a folder name (``amd-epyc``,
``intel-xeon``, ``nvidia-h100-80gb-hbm3``), so results of different machines sit side by side under
``benchmarks/results/<slug>/`` instead of replacing each other.

Reads ``/proc/cpuinfo`` where it exists (Linux) and falls back to :mod:`platform` elsewhere; nothing
here imports the rest of fmdconv.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any

import torch

# Instruction-set flags of /proc/cpuinfo that change which CPU kernels run (recorded when present).
FLAGS_OF_INTEREST = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)

# Words of CPU model names that say nothing about the machine's kind (marks, "Processor", clock).
_NOISE = re.compile(r"\((?:r|tm)\)|\b(?:processor|cpu|\d+-core)\b|@.*$", re.IGNORECASE)


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty without it)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return _parse_cpuinfo(cpuinfo.read())
    except OSError:
        return {}


def _parse_cpuinfo(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows, else ``"unknown CPU"``."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> list[str]:
    """The :data:`FLAGS_OF_INTEREST` this CPU has (empty where /proc/cpuinfo is missing)."""
    present = set(_cpuinfo().get("flags", "").split())
    return [flag for flag in FLAGS_OF_INTEREST if flag in present]


def slugify(name: str) -> str:
    """A folder name from a CPU or GPU model: lower case, marks and filler words dropped, dashes."""
    words = re.sub(r"[^a-z0-9]+", "-", _NOISE.sub(" ", name).lower()).strip("-")
    return words or "unknown"


def machine_record(device: torch.device | str | None = None) -> dict[str, Any]:
    """The machine behind a measurement on ``device`` (default: the CPU), as JSON-ready fields.

    ``cpu`` (model name), ``cpu_flags``, ``logical_cpus``, ``threads`` (torch's intra-op threads
    now), ``torch``, ``python``, ``gpu`` (the CUDA device's name, or None off CUDA) and ``slug``.
    """
    device = torch.device(device or "cpu")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    cpu = cpu_model()
    return {
        "cpu": cpu,
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": gpu,
        "slug": slugify(gpu or cpu),
    }


def machine_slug(device: torch.device | str | None = None) -> str:
    """The folder name of this machine's results on ``device``: the GPU's model on CUDA, else the CPU's."""
    return machine_record(device)["slug"]


def machine_line(record: dict[str, Any]) -> str:
    """One line naming the machine of a :func:`machine_record`, for reports and Markdown headers."""
    flags = ", ".join(record["cpu_flags"]) or "flags unknown"
    cpus = record["logical_cpus"]
    line = f"{record['cpu']} ({cpus} logical CPU{'' if cpus == 1 else 's'}; {flags})"
    if record["gpu"]:
        line = f"{record['gpu']}, host {line}"
    threads = record["threads"]
    return f"{line}, {threads} thread{'' if threads == 1 else 's'}, torch {record['torch']}"
