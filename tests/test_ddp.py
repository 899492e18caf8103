"""Two DistributedDataParallel processes on CPU (gloo), launched by torchrun as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from fmdconv.train.checkpoint import load_checkpoint
from fmdconv.train.logging import METRICS_FILE, read_metrics

TIMEOUT_SECONDS = 240


def test_two_gloo_processes_train_shard_and_write_once(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "fmdconv.cli",
        "train",
        "--dataset",
        "synthetic",
        "--model",
        "resnet18",
        "--width",
        "0.125",
        "--stem",
        "imagenet",
        "--image-size",
        "16",
        "--subset",
        "128",
        "--test-subset",
        "45",
        "--batch-size",
        "32",
        "--epochs",
        "2",
        "--lr",
        "0.02",
        "--conv",
        "fmd",
        "--temperature-warm-epochs",
        "1",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, env=environment, check=False
    )
    assert finished.returncode == 0, finished.stderr[-3000:]

    records = read_metrics(out / METRICS_FILE)
    epochs = [r for r in records if r["kind"] == "epoch"]
    # Rank 0 alone logs: one record per epoch. Each of the 2 processes takes 16 of every 32
    # images, so an epoch is 128 / 32 = 4 iterations; the 45 test images are split 23 + 22
    # without repeats and the counts summed over the ranks.
    assert [(r["epoch"], r["iteration"], r["test_images"]) for r in epochs] == [(1, 4, 45), (2, 8, 45)]
    assert finished.stderr.count("epoch 2/2: train loss") == 1
    checkpoint = load_checkpoint(out / "last.pt")
    assert (checkpoint["epoch"], checkpoint["iteration"]) == (2, 8)
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    weights = [value for value in checkpoint["model"].values() if value.is_floating_point()]
    assert all(torch.isfinite(value).all() for value in weights)
