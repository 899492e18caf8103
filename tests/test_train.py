"""Training end to end on synthetic data: recipes, schedules, temperatures, checkpoints, resume, CLI."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fmdconv.cli import main
from fmdconv.cli.eval import method_label
from fmdconv.layers import CONV_KINDS, LinearTemperature, dynamic_layers
from fmdconv.train import (
    EvalResult,
    LearningRateSchedule,
    Trainer,
    build_model,
    evaluate,
    has_kernel_num,
    load_trained_model,
    train,
)
from fmdconv.train import checkpoint as checkpoint_module
from fmdconv.train.checkpoint import load_checkpoint, save_checkpoint
from fmdconv.train.logging import METRICS_FILE, MetricsLogger, read_metrics
from fmdconv.train.progress import ProgressBar
from fmdconv.train.recipe import Recipe, load_recipe, packaged_recipes

# A run small enough for a test: a ResNet-18 with stages of 8-64 channels, 128 synthetic 16x16
# images, 4 iterations of 32 per epoch.
TINY = Recipe(
    model="resnet18",
    width=0.125,
    stem="imagenet",
    dataset="synthetic",
    image_size=16,
    subset=128,
    test_subset=64,
    epochs=2,
    batch_size=32,
    lr=0.02,
    schedule="cosine",
    milestones=(),
    temperature_warm_epochs=1,
    kernel_temperature="constant",
)
ITERS_PER_EPOCH = 4


def test_packaged_recipes_load_and_match_spec() -> None:
    assert set(packaged_recipes()) >= {"imagenet_resnet", "imagenet_mobilenetv2", "cifar", "fashion_mnist"}
    imagenet = load_recipe("imagenet_resnet")
    assert (imagenet.lr, imagenet.weight_decay, imagenet.epochs, imagenet.batch_size) == (0.1, 1e-4, 100, 256)
    assert (imagenet.schedule, imagenet.milestones, imagenet.momentum) == ("step", (30, 60, 90), 0.9)
    mobilenet = load_recipe("imagenet_mobilenetv2")
    assert (mobilenet.lr, mobilenet.schedule, mobilenet.epochs, mobilenet.weight_decay) == (
        0.05,
        "cosine",
        150,
        4e-5,
    )
    cifar = load_recipe("cifar")
    assert (cifar.stem, cifar.batch_size, cifar.kernel_num, cifar.milestones) == (
        "cifar",
        64,
        4,
        (30, 60, 90),
    )
    assert load_recipe("fashion_mnist").dataset == "fashion_mnist"


def test_recipe_files_overrides_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    TINY.replace(lr=0.3).save(path)
    assert load_recipe(path) == TINY.replace(lr=0.3)
    path.write_text(json.dumps({"lr": 0.2, "learning_rate": 0.1}))
    with pytest.raises(
        ValueError, match=r"unknown recipe setting.*learning_rate.*valid settings: model, conv"
    ):
        load_recipe(path)
    with pytest.raises(ValueError, match="packaged recipe"):
        load_recipe("no_such_recipe")
    with pytest.raises(ValueError, match="schedule must be one of step, cosine"):
        TINY.replace(schedule="linear")
    with pytest.raises(ValueError, match="lr must be a number"):
        TINY.replace(lr="0.1")
    with pytest.raises(ValueError, match="milestones must be increasing"):
        TINY.replace(milestones=(60, 30))


def test_learning_rate_schedule_values() -> None:
    step = LearningRateSchedule("step", iters_per_epoch=10, epochs=9, milestones=(3, 6), gamma=0.1)
    assert [step(t) for t in (0, 29, 30, 59, 60, 89)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    warm = LearningRateSchedule("step", iters_per_epoch=10, epochs=9, warmup_epochs=0.5, milestones=(3,))
    assert [warm(t) for t in (0, 1, 4, 5, 30)] == pytest.approx([0.2, 0.4, 1.0, 1.0, 0.1])
    cosine = LearningRateSchedule("cosine", iters_per_epoch=10, epochs=4, warmup_epochs=2)
    assert [cosine(t) for t in (0, 19, 20, 30, 40)] == pytest.approx([0.05, 1.0, 1.0, 0.5, 0.0])
    assert cosine(25) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 20)))


def test_a_few_iterations_train_and_write_readable_outputs(tmp_path: Path) -> None:
    recipe = TINY.replace(conv="static", lr=0.05, subset=256, epochs=2)
    result = train(recipe, tmp_path, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert result.history[1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[0]["test_images"] == 64
    records = read_metrics(tmp_path / METRICS_FILE)
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert epochs == result.history
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["iteration"] for r in steps] == list(range(1, 17))
    assert steps[0]["lr"] == 0.05  # the rate the first step ran with, not the next step's
    assert steps[1]["lr"] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi / 16)))

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    top1 = events.Scalars("epoch/test_top1")
    assert [(s.step, s.value) for s in top1] == [(8, pytest.approx(e["test_top1"])) for e in epochs[:1]] + [
        (16, pytest.approx(epochs[1]["test_top1"]))
    ]
    assert len(events.Scalars("step/loss")) == 16

    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert (checkpoint["epoch"], checkpoint["iteration"]) == (2, 16)
    assert Recipe.from_dict(checkpoint["recipe"]) == recipe
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == result.best_epoch
    model, loaded_recipe, _ = load_trained_model(tmp_path / "best.pt")
    assert loaded_recipe == recipe and not model.training


def test_the_logged_learning_rate_is_the_one_its_step_ran_with(tmp_path: Path) -> None:
    # Two steps of a cosine schedule from 0.1: the first runs at 0.1, the second at 0.05.
    recipe = TINY.replace(conv="static", subset=64, test_subset=32, epochs=1, lr=0.1, precise_bn_images=0)
    model = build_model(recipe)
    rates: list[float] = []
    trainer = Trainer(recipe, tmp_path, progress=False, tensorboard=False, model=model)
    model.register_forward_pre_hook(
        lambda module, _: rates.append(trainer.optimizer.param_groups[0]["lr"]) if module.training else None
    )
    result = trainer.run()
    steps = [r for r in read_metrics(tmp_path / METRICS_FILE) if r["kind"] == "step"]
    assert rates == pytest.approx([0.1, 0.05])
    assert [(r["iteration"], r["lr"]) for r in steps] == [(1, rates[0]), (2, rates[1])]
    assert result.final["lr"] == rates[1]  # the epoch's last step


def test_layers_see_the_scheduled_temperature_at_each_iteration(tmp_path: Path) -> None:
    seen: list[tuple[bool, float, float]] = []
    recipe = TINY.replace(
        conv="fmd",
        temperature_warm_epochs=1.5,
        kernel_temperature="degraded",
        test_subset=32,
        precise_bn_images=0,  # its training-mode forwards would mix with the steps' here
    )
    model = build_model(recipe)
    dynamic_layers(model)[0].register_forward_pre_hook(
        lambda module, _: seen.append(
            (module.training, float(module.gate_temperature), float(module.kernel_temperature))
        )
    )
    train(recipe, tmp_path, progress=False, tensorboard=False, model=model)
    gate = LinearTemperature(ITERS_PER_EPOCH, start=30.0, warm_epochs=1.5)
    kernel = LinearTemperature(ITERS_PER_EPOCH, start=34.0, warm_epochs=1.5)
    iterations = range(1, 2 * ITERS_PER_EPOCH + 1)
    training = [(g, k) for is_training, g, k in seen if is_training]
    assert [g for g, _ in training] == pytest.approx([gate(t) for t in iterations])
    assert [k for _, k in training] == pytest.approx([kernel(t) for t in iterations])
    assert training[0] == pytest.approx((30 - 29 / 6, 34 - 33 / 6))  # t = 1 of N = 6
    assert training[-1] == (1.0, 1.0)
    evaluation = [(g, k) for is_training, g, k in seen if not is_training]
    assert evaluation[0] == pytest.approx((gate(ITERS_PER_EPOCH), kernel(ITERS_PER_EPOCH)))
    model, _, _ = load_trained_model(tmp_path / "last.pt")  # the temperature travels with the weights
    assert (
        float(dynamic_layers(model)[0].gate_temperature),
        float(dynamic_layers(model)[0].kernel_temperature),
    ) == (
        1.0,
        1.0,
    )


def test_resume_after_a_kill_equals_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dropout draws from the global generator and the data order is reshuffled every epoch, so
    # both must be restored exactly for the weights to match.
    recipe = TINY.replace(conv="fmd", dropout=0.2, epochs=3)
    uninterrupted = train(recipe, tmp_path / "whole", progress=False, tensorboard=False)

    batches = Trainer._batches

    def killed_in_epoch_two(self: Trainer, loader: object) -> Iterator[object]:
        for index, batch in enumerate(batches(self, loader)):
            if self.epoch == 1 and index == 2:
                raise KeyboardInterrupt  # the process dies mid-epoch
            yield batch

    monkeypatch.setattr(Trainer, "_batches", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, tmp_path / "killed", progress=False, tensorboard=False)
    monkeypatch.setattr(Trainer, "_batches", batches)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 1
    assert [p.name for p in (tmp_path / "killed").iterdir() if ".tmp" in p.name] == []
    resumed = train(recipe, tmp_path / "killed", resume=True, progress=False, tensorboard=False)

    whole = load_checkpoint(tmp_path / "whole" / "last.pt")
    again = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert whole["model"].keys() == again["model"].keys()
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, again["model"][name]), name
    for state, other in zip(
        whole["optimizer"]["state"].values(), again["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(state["momentum_buffer"], other["momentum_buffer"])
    exact = ("train_loss", "train_top1", "test_top1", "test_top5", "test_loss", "lr", "gate_temperature")
    for a, b in zip(uninterrupted.history, resumed.history, strict=True):
        assert {k: a[k] for k in exact} == {k: b[k] for k in exact}
    steps = [r["iteration"] for r in read_metrics(tmp_path / "killed" / METRICS_FILE) if r["kind"] == "step"]
    assert steps == list(range(1, 13))  # the lost partial epoch left no records behind


def test_checkpoints_are_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1, "weights": torch.arange(4.0)})

    def crash_half_way(state: object, file: Path) -> None:
        Path(file).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a checkpoint"):
        load_checkpoint(path)


def test_bf16_mixed_precision_trains_on_cpu(tmp_path: Path) -> None:
    # The output dtype of the first dynamic layer and of the classifier in each training and
    # evaluation forward pass: bfloat16 only if autocast is on.
    dtypes: list[tuple[bool, torch.dtype, torch.dtype]] = []
    recipe = TINY.replace(conv="fmd", precision="bf16", epochs=1)
    model = build_model(recipe)
    seen: dict[str, torch.dtype] = {}
    dynamic_layers(model)[0].register_forward_hook(lambda m, i, output: seen.update(conv=output.dtype))
    model.fc.register_forward_hook(
        lambda m, i, output: dtypes.append((m.training, seen["conv"], output.dtype))
    )
    result = train(recipe, tmp_path, progress=False, tensorboard=False, model=model)
    assert math.isfinite(result.final["train_loss"])
    assert {(training, conv, fc) for training, conv, fc in dtypes} == {
        (True, torch.bfloat16, torch.bfloat16),
        (False, torch.bfloat16, torch.bfloat16),
    }
    # 4 training steps, 4 batches re-estimating BatchNorm (the whole tiny training set), 64 test images
    # in batches of 32.
    assert len(dtypes) == 2 * ITERS_PER_EPOCH + 2
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train(TINY.replace(precision="fp16"), tmp_path / "fp16", device="cpu")


def test_train_and_eval_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    flags = ["--dataset", "synthetic", "--model", "resnet18", "--width", "0.125", "--stem", "imagenet"]
    flags += ["--image-size", "16", "--subset", "64", "--test-subset", "32", "--batch-size", "32"]
    flags += ["--epochs", "1", "--lr", "0.02", "--conv", "od", "--temperature-warm-epochs", "1"]
    assert main(["train", *flags, "--out", str(out), "--no-progress", "--no-tensorboard"]) == 0
    assert "1 epochs, test top-1" in capsys.readouterr().out
    assert main(["train", *flags, "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--lr", "0.5"]) == 2
    assert "cannot resume with different lr" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    assert "2 epochs" in capsys.readouterr().out

    assert main(["eval", str(out / "last.pt"), "--json", "--latency-repeats", "2", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    final = load_checkpoint(out / "last.pt")["history"][-1]
    assert (report["top1"], report["top5"], report["images"]) == (final["test_top1"], final["test_top5"], 32)
    assert report["latency"]["batch_size"] == 1 and report["latency"]["median_s"] > 0
    assert main(["eval", str(out / "best.pt"), "--latency-repeats", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "resnet18 (od, n = 4) on synthetic" in printed and "top-1" in printed

    assert (
        main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--out", str(tmp_path / "c")])
        == 1
    )
    assert "cifar10 not found" in capsys.readouterr().err
    assert main(["train", "--dataset", "mnist", "--out", str(tmp_path / "m")]) == 2
    assert "dataset must be one of" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.pt")]) == 1


def test_progress_bar_on_a_terminal_and_in_a_log() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    log = io.StringIO()
    bar = ProgressBar(8, "epoch 1/1", stream=log, report_percent=50)
    for _ in range(8):
        bar.update(32, loss=0.5, acc=0.75)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/1 [") and "4/8 loss 0.5 acc 0.75" in lines[0]
    assert "img/s" in lines[1] and "ETA 0:00" in lines[1]
    terminal = Terminal()
    bar = ProgressBar(3, "test", stream=terminal)
    for _ in range(3):
        bar.update(1, top1=1.0)
    drawn = terminal.getvalue()
    assert drawn.startswith("\r\033[K") and drawn.endswith("\n") and "3/3 top1 1 |" in drawn
    silent = io.StringIO()
    ProgressBar(2, "x", stream=silent, enabled=False).update(1)
    assert silent.getvalue() == ""


def test_clip_grad_norm_bounds_every_step(tmp_path: Path) -> None:
    # With plain SGD at lr 1, each step moves the parameters by exactly the clipped gradient.
    clip = 1e-3
    recipe = TINY.replace(
        conv="fmd", epochs=1, lr=1.0, momentum=0.0, weight_decay=0.0, schedule="step", clip_grad_norm=clip
    )
    trainer = Trainer(recipe, tmp_path, progress=False, tensorboard=False)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.run()
    after = trainer.model.parameters()
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(after, before, strict=True)])
    assert 0 < moved.norm() <= ITERS_PER_EPOCH * clip * (1 + 1e-4)
    with pytest.raises(ValueError, match=r"clip_grad_norm must be > 0 or None; got 0\.0"):
        TINY.replace(clip_grad_norm=0.0)


def test_evaluate_on_known_logits() -> None:
    # The "model" passes its input through, so the logits are the images; 7 classes, batches of 4.
    logits = torch.tensor(
        [
            [9.0, 8, 7, 6, 5, 4, 3],  # label 0: rank 1
            [9.0, 8, 7, 6, 5, 4, 3],  # label 1: rank 2
            [3.0, 4, 5, 6, 7, 8, 9],  # label 2: rank 5
            [3.0, 4, 5, 6, 7, 8, 9],  # label 1: rank 6
            [0.0, 0, 0, 0, 0, 0, 2],  # label 6: rank 1
            [1.0, 2, 3, 4, 5, 6, 7],  # label 0: rank 7
        ]
    )
    labels = torch.tensor([0, 1, 2, 1, 6, 0])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(logits, labels), batch_size=4)
    result = evaluate(torch.nn.Identity(), loader, torch.device("cpu"), progress=False)
    assert (result.top1, result.top5, result.images) == (2 / 6, 4 / 6, 6)
    log_softmax = [
        row[label] - math.log(sum(math.exp(v) for v in row))
        for row, label in zip(logits.tolist(), labels.tolist(), strict=True)
    ]
    assert result.loss == pytest.approx(-sum(log_softmax) / 6)


def test_training_loss_is_label_smoothed_cross_entropy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smoothing = 0.2
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # (logits, labels) of each training step
    batches = Trainer._batches

    def recording_batches(self: Trainer, loader: object) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in batches(self, loader):
            seen.append((torch.empty(0), labels))
            yield images, labels

    def keep_logits(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
        if module.training:
            seen[-1] = (output.detach().clone(), seen[-1][1])

    monkeypatch.setattr(Trainer, "_batches", recording_batches)
    recipe = TINY.replace(
        conv="static", epochs=1, label_smoothing=smoothing, test_subset=32, precise_bn_images=0
    )
    model = build_model(recipe)
    model.register_forward_hook(keep_logits)
    train(recipe, tmp_path, progress=False, tensorboard=False, model=model)
    losses = [r["loss"] for r in read_metrics(tmp_path / METRICS_FILE) if r["kind"] == "step"]
    assert len(losses) == len(seen) == ITERS_PER_EPOCH
    for loss, (logits, labels) in zip(losses, seen, strict=True):
        # (1 - e) * -log p[label] + e * mean over the classes of -log p[c]
        log_p = logits.double().log_softmax(1)
        expected = (1 - smoothing) * -log_p.gather(1, labels[:, None]).mean() + smoothing * -log_p.mean()
        assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_best_checkpoint_holds_the_epoch_with_the_best_test_top1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Test top-1 0.5, 0.7, 0.7, 0.6: epoch 2 is best (a tie does not replace it); best.pt must hold
    # epoch 2's model, and last.pt epoch 4's.
    scripted = iter([0.5, 0.7, 0.7, 0.6])
    trainer = Trainer(TINY.replace(conv="static", epochs=4), tmp_path, progress=False, tensorboard=False)
    evaluate_test_split = trainer._evaluate

    def scripted_evaluate() -> EvalResult:
        return dataclasses.replace(evaluate_test_split(), top1=next(scripted))

    monkeypatch.setattr(trainer, "_evaluate", scripted_evaluate)
    weights_after: list[dict[str, torch.Tensor]] = []  # each epoch's model as evaluated
    recalibrate = trainer._recalibrate_batchnorm

    def recording_recalibrate() -> dict[str, object]:
        record = recalibrate()
        weights_after.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return record

    monkeypatch.setattr(trainer, "_recalibrate_batchnorm", recording_recalibrate)
    result = trainer.run()
    assert (result.best_epoch, result.best_top1) == (2, 0.7)
    best, last = load_checkpoint(tmp_path / "best.pt"), load_checkpoint(tmp_path / "last.pt")
    assert (best["epoch"], best["best_epoch"], best["best_top1"]) == (2, 2, 0.7)
    assert (last["epoch"], last["best_epoch"]) == (4, 2)
    for name, tensor in best["model"].items():
        assert torch.equal(tensor, weights_after[1][name]), name
    assert not all(torch.equal(t, weights_after[3][n]) for n, t in best["model"].items())


def test_command_line_error_exits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = ["--dataset", "synthetic", "--model", "resnet18", "--width", "0.125", "--stem", "imagenet"]
    flags += ["--image-size", "16", "--subset", "64", "--test-subset", "32", "--batch-size", "32"]
    flags += ["--epochs", "1", "--conv", "static", "--no-progress", "--no-tensorboard"]
    out = tmp_path / "run"
    assert main(["train", *flags, "--out", str(out)]) == 0
    capsys.readouterr()

    def exits(argv: list[str], code: int, message: str) -> None:
        assert main(argv) == code, argv
        assert message in capsys.readouterr().err, argv

    exits(["train", "--out", str(out), "--resume", "--recipe", "cifar"], 2, "--recipe cannot be combined")
    exits(["train", "--resume"], 2, "--resume needs --out")
    nan = tmp_path / "nan"
    exits(["train", *flags, "--lr", "1e30", "--out", str(nan)], 1, "the training loss became nan")
    exits(["cam", str(out / "last.pt"), "--from-dataset", "-1"], 2, "--from-dataset must be >= 0; got -1")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((out / "last.pt").read_bytes()[:1000])
    exits(["eval", str(corrupt), "--no-progress"], 2, "is not a checkpoint")
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint\n")
    exits(["eval", str(garbage), "--no-progress"], 2, "is not a checkpoint (torch.load could not read it")
    exits(["eval", str(out), "--no-progress"], 2, "is a folder, not a checkpoint file")

    def interrupted(self: Trainer, loader: object) -> Iterator[object]:
        raise KeyboardInterrupt  # Ctrl-C
        yield

    monkeypatch.setattr(Trainer, "_batches", interrupted)
    exits(["train", *flags, "--out", str(tmp_path / "stopped")], 130, "fmdconv train: interrupted")


def test_evaluate_refuses_an_accuracy_from_non_finite_logits() -> None:
    class Diverged(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(x.shape[0], 10)
            logits[0] = float("nan")
            return logits

    images, labels = torch.randn(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=2)
    with pytest.raises(FloatingPointError, match="NaN or infinite for 2 of 4 images"):
        evaluate(Diverged(), loader, torch.device("cpu"), progress=False)


def test_metrics_json_stays_valid_and_a_truncated_last_line_is_dropped(tmp_path: Path) -> None:
    from fmdconv.utils.io import dumps_json

    assert json.loads(dumps_json({"grad_norm": math.nan, "x": [math.inf, 1.0]})) == {
        "grad_norm": None,
        "x": [None, 1.0],
    }
    path = tmp_path / METRICS_FILE
    path.write_text('{"kind": "step", "iteration": 1}\n{"kind": "step", "itera')
    assert read_metrics(path) == [{"kind": "step", "iteration": 1}]
    path.write_text('{"kind": "step", "itera\n{"kind": "step", "iteration": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 1: not a JSON record"):
        read_metrics(path)
    path.write_text('{"kind": "step"}\n')
    with pytest.raises(ValueError, match="line 1: not a metrics record"):
        read_metrics(path)


def test_resuming_drops_a_truncated_last_metrics_line_and_appends_after_it(tmp_path: Path) -> None:
    # A crash while appending leaves a last line without its newline: the resumed log drops it.
    path = tmp_path / METRICS_FILE
    path.write_text('{"kind": "step", "iteration": 1}\n{"kind": "epoch", "iteration": 2}\n{"kind": "st')
    logger = MetricsLogger(tmp_path, tensorboard=False, resume_iteration=2)
    assert path.read_text() == '{"kind": "step", "iteration": 1}\n{"kind": "epoch", "iteration": 2}\n'
    logger.log({"kind": "step", "iteration": 3})
    assert [r["iteration"] for r in read_metrics(path)] == [1, 2, 3]


def test_the_eval_header_gives_n_only_to_methods_with_kernels() -> None:
    assert [kind for kind in CONV_KINDS if has_kernel_num(kind)] == ["cond", "dy", "od", "fmd", "fd"]
    assert method_label(TINY.replace(conv="od", kernel_num=8)) == "od, n = 8"
    assert method_label(TINY.replace(conv="fd")) == "fd, n = 4"
    for conv in ("dcd", "kw", "static"):
        assert method_label(TINY.replace(conv=conv)) == conv
    assert method_label(TINY.replace(conv="static", attention="se")) == "static + se"
    assert method_label(TINY.replace(conv="od", attention="eca")) == "od + eca, n = 4"
