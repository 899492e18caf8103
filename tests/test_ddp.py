"""Two DistributedDataParallel processes on CPU (gloo), launched by torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from fmdconv.layers import TemperatureScheduler
from fmdconv.train import build_model, recalibrate_batchnorm
from fmdconv.train.checkpoint import load_checkpoint
from fmdconv.train.logging import METRICS_FILE, read_metrics
from fmdconv.train.recipe import Recipe

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


def reference_data_parallel_training(
    recipe: Recipe, initial: dict[str, Tensor], shards: list[list[tuple[Tensor, Tensor]]]
) -> dict[str, Tensor]:
    """What DDP computes, in one process: ``shards[r][i]`` is rank r's batch at iteration i.

    Each rank's BatchNorms normalise with its own shard's statistics (DDP does not synchronise them),
    so the step is SGD on the mean over ranks of each shard's loss -- not on the loss of the
    concatenated batch. Running statistics are rank 0's, which the trainer gives every rank after
    each epoch (in training mode they do not affect the outputs).
    """
    model = build_model(recipe)
    model.load_state_dict(initial)
    model.train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    iters_per_epoch = len(shards[0]) // recipe.epochs
    temperature = TemperatureScheduler.for_paper(
        model,
        iters_per_epoch,
        warm_epochs=recipe.temperature_warm_epochs,
        kernel_mode=recipe.kernel_temperature,
    )
    parameters = dict(model.named_parameters())
    for batches in zip(*shards, strict=True):
        temperature.step()
        optimizer.zero_grad()
        losses = []
        for rank, (images, labels) in enumerate(batches):
            # Ranks other than 0 update a throw-away copy of the running statistics.
            buffers = {n: b if rank == 0 else b.clone() for n, b in model.named_buffers()}
            logits = torch.func.functional_call(model, {**parameters, **buffers}, (images,))
            losses.append(F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing))
        torch.stack(losses).mean().backward()
        optimizer.step()
    return model.state_dict()


def test_ranks_stay_identical_and_match_data_parallel_sgd(tmp_path: Path) -> None:
    recipe = Recipe(
        model="resnet18",
        width=0.125,
        stem="imagenet",
        dataset="synthetic",
        image_size=16,
        subset=64,
        test_subset=16,
        epochs=2,
        batch_size=16,
        lr=0.05,
        milestones=(),
        label_smoothing=0.1,
        conv="fmd",
        kernel_num=2,
        temperature_warm_epochs=1,
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += [str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path), json.dumps(recipe.to_dict())]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, env=environment, check=False
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [len(rank["batches"]) for rank in ranks] == [8, 8]  # 2 epochs of 64 / 16 iterations
    assert all(len(labels) == 8 for rank in ranks for _, labels in rank["batches"])
    # Every parameter and buffer (BatchNorm statistics of the backbone and of the gate trunks,
    # temperatures) is the same on both ranks, to the bit.
    for name, value in ranks[0]["final"].items():
        assert torch.equal(value, ranks[1]["final"][name]), name
    assert any(not torch.equal(v, ranks[0]["initial"][n]) for n, v in ranks[0]["final"].items())
    expected = reference_data_parallel_training(recipe, ranks[0]["initial"], [r["batches"] for r in ranks])
    # Before each evaluation each rank re-estimated the BatchNorm statistics over its share of the
    # epoch's batches (all 4, fewer images than precise_bn_images) and the ranks averaged them: the
    # statistics of the final weights over epoch 2's batches of both ranks.
    model = build_model(recipe)
    model.load_state_dict(expected)
    recalibrate_batchnorm(model, [images for rank in ranks for images, _ in rank["batches"][4:]])
    expected = model.state_dict()
    for name, value in ranks[0]["final"].items():
        # Summation order differs (DDP averages bucketed gradients): equal up to rounding.
        torch.testing.assert_close(
            value, expected[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}"
        )
