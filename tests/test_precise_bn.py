"""Precise BatchNorm: statistics re-estimated with an epoch's final weights before evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fmdconv.data import build_loader
from fmdconv.train import build_model, build_split, epoch_seed, recalibrate_batchnorm, train
from fmdconv.train.checkpoint import LAST_CHECKPOINT, load_checkpoint
from fmdconv.train.logging import METRICS_FILE, read_metrics
from fmdconv.train.recipe import saved_recipe
from test_train import TINY


def bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
    )


def test_statistics_become_the_mean_of_the_batches_statistics() -> None:
    net = bn_net().eval()
    norm = net[1]
    norm.running_mean.fill_(5.0)  # stale statistics must not leak into the estimate
    norm.num_batches_tracked.fill_(7)
    batches = [torch.randn(8, 3, 6, 6) * (1 + i) + i for i in range(3)]
    assert recalibrate_batchnorm(net, iter(batches)) == 24
    with torch.no_grad():
        features = [net[0](batch) for batch in batches]
    expected_mean = torch.stack([f.mean((0, 2, 3)) for f in features]).mean(0)
    expected_var = torch.stack([f.var((0, 2, 3)) for f in features]).mean(0)  # unbiased, as BatchNorm
    torch.testing.assert_close(norm.running_mean, expected_mean)
    torch.testing.assert_close(norm.running_var, expected_var)
    assert norm.momentum == 0.1 and int(norm.num_batches_tracked) == 7
    assert not net.training


def test_max_images_counts_whole_batches_and_modes_are_restored_per_module() -> None:
    net = bn_net().train()
    net[1].eval()  # a frozen BatchNorm stays frozen afterwards
    batches = [torch.randn(8, 3, 6, 6) for _ in range(4)]
    assert recalibrate_batchnorm(net, iter(batches), max_images=9) == 16
    assert net.training and [m.training for m in net] == [True, False, True, True, True]
    assert recalibrate_batchnorm(nn.Linear(2, 2), iter(batches)) == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"batches": []}, "at least one batch"),
        ({"max_images": 0}, "max_images must be None or an int >= 1"),
        ({"precision": "fp64"}, "precision must be one of fp32, bf16, fp16"),
        ({"batches": [torch.randn(8, 5, 6, 6)]}, "channels"),  # the model itself raises
    ],
)
def test_a_failed_call_keeps_the_statistics(arguments: dict, message: str) -> None:
    net = bn_net().eval()
    before = {name: value.clone() for name, value in net.state_dict().items()}
    call = {"batches": [torch.randn(8, 3, 6, 6)], **arguments}
    with pytest.raises((ValueError, RuntimeError), match=message):
        recalibrate_batchnorm(net, iter(call.pop("batches")), **call)
    assert all(torch.equal(value, before[name]) for name, value in net.state_dict().items())
    assert net[1].momentum == 0.1 and not net.training


def test_the_trainer_recalibrates_before_evaluating_without_changing_training(tmp_path: Path) -> None:
    # Two epochs with dropout: recalibrating between them must draw no random number that the
    # second epoch's dropout would have drawn.
    base = TINY.replace(conv="od", epochs=2, dropout=0.5)
    runs = {}
    for images in (0, 2048):
        recipe = base.replace(precise_bn_images=images)
        train(recipe, tmp_path / str(images), progress=False, tensorboard=False)
        runs[images] = (
            read_metrics(tmp_path / str(images) / METRICS_FILE),
            load_checkpoint(tmp_path / str(images) / LAST_CHECKPOINT)["model"],
        )
    (plain_metrics, plain), (precise_metrics, precise) = runs[0], runs[2048]
    steps = [
        [r["loss"] for r in metrics if r["kind"] == "step"] for metrics in (plain_metrics, precise_metrics)
    ]
    assert steps[0] == steps[1]  # the same training, to the bit
    epochs = [r for r in precise_metrics if r["kind"] == "epoch"]
    assert [r["precise_bn_images"] for r in epochs] == [128, 128]  # the whole training set each time
    assert "precise_bn_images" not in next(r for r in plain_metrics if r["kind"] == "epoch")
    statistics = [name for name in plain if "running_" in name]
    assert statistics and all(torch.equal(plain[n], precise[n]) for n in plain if n not in statistics)
    assert any(not torch.equal(plain[n], precise[n]) for n in statistics)
    # The precise run's statistics are the plain run's weights re-estimated over epoch 2's batches.
    model = build_model(base)
    model.load_state_dict(plain)
    loader = build_loader(build_split(base, "train"), 32, train=True, seed=epoch_seed(base.seed, 1))
    recalibrate_batchnorm(model, (images for images, _ in loader))
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, precise[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_saved_recipe_without_later_settings_keeps_what_it_was_trained_with() -> None:
    values = TINY.to_dict()
    del values["attention_init"], values["precise_bn_images"]
    saved = saved_recipe(values)
    assert (saved.attention_init, saved.precise_bn_images) == ("authors", 0)
    assert saved_recipe(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="precise_bn_images must be an int >= 0"):
        TINY.replace(precise_bn_images=-1)
