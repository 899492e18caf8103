"""The machine record behind every benchmark file and training report (fmdconv.utils.machine)."""

from __future__ import annotations

import json

import pytest
import torch

from fmdconv.experiments.report import machine_description
from fmdconv.utils import machine


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Intel(R) Xeon(R) Processor", "intel-xeon"),
        ("AMD EPYC", "amd-epyc"),
        ("AMD EPYC 7B13 64-Core Processor", "amd-epyc-7b13"),
        ("Intel(R) Xeon(R) Platinum 8480C CPU @ 2.00GHz", "intel-xeon-platinum-8480c"),
        ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
        ("(R) @ 3GHz", "unknown"),
    ],
)
def test_slugs_are_folder_names_of_the_machine_kind(name, slug):
    assert machine.slugify(name) == slug


def test_record_names_cpu_flags_threads_and_torch(monkeypatch):
    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx avx2 fma avx512f amx_tile\n\n"
    cpuinfo += "processor\t: 1\nmodel name\t: something else\n"
    monkeypatch.setattr(machine, "_cpuinfo", lambda: machine._parse_cpuinfo(cpuinfo))
    record = machine.machine_record("cpu")
    assert json.loads(json.dumps(record)) == record
    assert record["cpu"] == "AMD EPYC" and record["slug"] == "amd-epyc" and record["gpu"] is None
    assert record["cpu_flags"] == ["avx", "avx2", "fma", "avx512f", "amx_tile"]
    assert record["threads"] == torch.get_num_threads() and record["torch"] == torch.__version__
    line = machine.machine_line({**record, "threads": 1})
    assert (
        line.startswith("AMD EPYC (")
        and "avx512f" in line
        and line.endswith(f"1 thread, torch {torch.__version__}")
    )


def test_without_proc_the_record_still_names_a_cpu(monkeypatch):
    monkeypatch.setattr(machine, "_cpuinfo", dict)
    record = machine.machine_record()
    assert record["cpu"] and record["cpu_flags"] == [] and record["slug"]


def test_training_reports_name_the_cpu_model_and_threads():
    text = machine_description(torch.device("cpu"))
    assert machine.cpu_model() in text and f"{torch.get_num_threads()} thread" in text
