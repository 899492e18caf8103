"""keep_freed_memory: large CPU buffers freed and allocated again cost no page faults."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from fmdconv.utils import allocator

FAULTS_PER_ALLOCATION = """
import resource, sys, torch
from fmdconv.utils.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.empty(100 * 2**18).fill_(1.0)  # 100 MiB, freed at once
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5
# Fresh heap pages fault once, when a buffer first reaches them: the steady state counts.
print(applied, min(faults() for _ in range(4)))
"""


def faults_per_allocation(mode: str) -> tuple[str, int]:
    src = str(Path(__file__).parents[1] / "src")
    environment = {**os.environ, "PYTHONPATH": src}
    for name in allocator._USER_SETTINGS:
        environment.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_ALLOCATION, mode],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or sys.platform != "linux", reason="glibc only")
def test_freed_memory_is_reused_without_page_faults():
    applied, kept = faults_per_allocation("keep")
    _, default = faults_per_allocation("default")
    assert applied == "True" and kept < 100 < default  # 100 MiB is 25,600 pages of 4 KiB


def test_the_users_own_malloc_settings_win(monkeypatch):
    monkeypatch.setenv("MALLOC_TOP_PAD_", "0")
    assert allocator.keep_freed_memory() is False


def test_a_bare_layer_call_leaves_the_allocator_alone(monkeypatch):
    import torch

    from fmdconv import FMDConv2d, ODConv2d

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(allocator, "attempted", False)
    for method in (FMDConv2d, ODConv2d):
        layer = method(8, 8, 3, padding=1).train()
        layer(torch.randn(2, 8, 5, 5)).sum().backward()  # CPU training
    assert calls == []


def test_the_trainer_keeps_freed_memory_once_unless_switched_off(monkeypatch, tmp_path):
    from fmdconv.train import Recipe, Trainer

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(allocator, "attempted", False)
    recipe = Recipe(
        model="resnet18",
        width=0.125,
        dataset="synthetic",
        image_size=16,
        subset=32,
        test_subset=16,
        epochs=1,
        batch_size=16,
    )
    Trainer(recipe, tmp_path / "a", device="cpu", progress=False, tensorboard=False)
    Trainer(recipe, tmp_path / "b", device="cpu", progress=False, tensorboard=False)
    assert calls == [1]
    monkeypatch.setattr(allocator, "attempted", False)
    monkeypatch.setattr(allocator, "automatic", False)
    Trainer(recipe, tmp_path / "c", device="cpu", progress=False, tensorboard=False)
    assert calls == [1]
