"""What a new user ran into: wrong answers and unclear errors of the commands and the
training code, each checked here with the smallest run that shows it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fmdconv.cli import build_parser, main
from fmdconv.data import CIFAR10, DatasetNotFoundError, FashionMNIST, build_dataset
from fmdconv.experiments.ablation import ablate
from fmdconv.layers import dynamic_layers
from fmdconv.layers.factory import create_conv2d
from fmdconv.models import METHODS, create_model, method_options
from fmdconv.train import Trainer, load_trained_model, train
from fmdconv.train.checkpoint import load_checkpoint
from fmdconv.train.logging import METRICS_FILE, read_metrics
from fmdconv.train.recipe import Recipe
from fmdconv.utils.devices import resolve_device
from test_ablation import TINY as TINY_MOBILENET
from test_data import make_cifar10_dir, make_fashion_dir
from test_train import TINY

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without CUDA, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_resume_with_fewer_epochs_than_done_is_refused(tmp_path: Path, capsys) -> None:
    train(TINY.replace(conv="static", epochs=2), tmp_path, progress=False, tensorboard=False)
    assert main(["train", "--out", str(tmp_path), "--resume", "--epochs", "1", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "cannot resume with epochs=1: the checkpoint has already trained 2 epochs" in error
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2


def test_ablated_attentions_are_saved_and_every_loader_gets_them(tmp_path: Path, capsys) -> None:
    _, result = ablate(TINY_MOBILENET, "attentions", tmp_path, values=["all", "kernel"], progress=False)
    checkpoint = Path(result.run_dir) / "last.pt"
    model, _, saved = load_trained_model(checkpoint)
    assert all(layer.disabled_attentions == {"input", "output", "spatial"} for layer in dynamic_layers(model))
    assert main(["eval", str(checkpoint), "--json", "--latency-repeats", "0", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    final = saved["history"][-1]
    assert report["top1"] == result.top1 == final["test_top1"]
    assert report["loss"] == pytest.approx(final["test_loss"], rel=1e-5)
    # A resumed run keeps them too (the ablation sets them again; a plain resume must not lose them).
    trainer = Trainer(TINY_MOBILENET.replace(epochs=2), Path(result.run_dir), resume=True, progress=False)
    assert all(
        layer.disabled_attentions == {"input", "output", "spatial"} for layer in dynamic_layers(trainer.model)
    )
    trainer.close()


def test_an_epoch_logs_exactly_ten_step_records(tmp_path: Path) -> None:
    recipe = TINY.replace(conv="static", subset=120, batch_size=8, epochs=1, test_subset=8)  # 15 steps
    train(recipe, tmp_path, progress=False, tensorboard=False)
    steps = [r["iteration"] for r in read_metrics(tmp_path / METRICS_FILE) if r["kind"] == "step"]
    assert len(steps) == 10 and steps[-1] == 15


@pytest.mark.parametrize("command", ["train", "compare", "ablate"])
@pytest.mark.parametrize("place", ["file", "file/below"])
def test_out_naming_a_file_is_a_usage_error(tmp_path: Path, capsys, command: str, place: str) -> None:
    (tmp_path / "file").write_text("")
    extra = ["--factor", "kernel_num"] if command == "ablate" else []
    with pytest.raises(SystemExit) as exit_info:
        main([command, *extra, "--out", str(tmp_path / place)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"fmdconv {command}: error: argument --out: " in error and "is a file, not a folder" in error


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--device", "cuda"],
        ["compare", "--device", "cuda:0"],
        ["profile", "--model", "resnet18", "--device", "cuda"],
        ["bench", "--device", "cuda"],
        ["eval", "missing.pt", "--device", "cuda"],
    ],
)
def test_a_device_this_machine_lacks_is_named(no_cuda, capsys, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    device = argv[argv.index("--device") + 1]
    assert error.endswith(
        f"argument --device: device '{device}' is not available: no CUDA device on this machine"
    )


def test_an_unknown_device_name_is_named(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--device", "bogus"])
    assert (
        "argument --device: device must be cpu, cuda, cuda:N or auto; got 'bogus'" in capsys.readouterr().err
    )
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["profile", "--model", "resnet18", "--conv", "static:4"],
            "static mixes no kernels: 'static:4' takes no :N",
        ),
        (
            ["profile", "--model", "resnet18", "--num-classes", "0"],
            "argument --num-classes: must be an int >= 1",
        ),
        (["bench", "--quiet-wait", "-1"], "argument --quiet-wait: must be a number >= 0, got -1"),
    ],
)
def test_bad_numbers_are_refused_at_parse_time(capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_settings_that_must_be_positive_are_named(tmp_path: Path, capsys) -> None:
    argv = ["train", "--kernel-temperature-start", "0", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert "kernel_temperature_start must be > 0 or None; got 0.0" in capsys.readouterr().err


def test_data_dir_naming_a_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(DatasetNotFoundError, match=r"notes\.txt: is a file, not a directory"):
        CIFAR10("train", tmp_path / "notes.txt")
    with pytest.raises(DatasetNotFoundError, match=r"notes\.txt is a file, not a directory"):
        FashionMNIST("train", tmp_path / "notes.txt")


def test_data_dir_expands_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    make_cifar10_dir(tmp_path / "data")
    make_fashion_dir(tmp_path / "fashion")
    assert len(CIFAR10("test", "~/data")) == 4
    assert len(FashionMNIST("test", "~/fashion")) == 5
    assert len(build_dataset("cifar10", "test", data_dir="~/data/cifar-10-batches-py")) == 4
    recipe = Recipe(dataset="fashion_mnist", data_dir="~/fashion")
    assert len(build_dataset(recipe.dataset, "test", data_dir=recipe.data_dir)) == 5


def test_python_dash_m_fmdconv_runs_the_command() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "fmdconv", "train", "--help"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": ""},
        check=True,
    )
    # The help's launch hint works now that fmdconv has a __main__ (help text wraps at hyphens).
    assert "torchrun--nproc-per-nodeN-mfmdconvtrain" in "".join(completed.stdout.split())


def test_only_commands_with_resume_mention_it() -> None:
    subcommands = build_parser()._subparsers._group_actions[0].choices
    assert "--resume" in subcommands["train"].format_help()
    for name in ("compare", "ablate"):
        assert "--resume" not in subcommands[name].format_help(), name


@pytest.mark.parametrize("method", METHODS)
def test_an_empty_batch_through_every_model(method: str) -> None:
    # The feature attentions and FDConv are offered on the ResNets only.
    models = ["resnet18"] + (["mobilenet_v2"] if method not in ("se", "cbam", "eca", "fd") else [])
    for name in models:
        model = create_model(name, **method_options(method), width=0.25, num_classes=10, kernel_num=2)
        for training in (True, False):
            assert model.train(training)(torch.randn(0, 3, 32, 32)).shape == (0, 10), (name, training)


@pytest.mark.parametrize(
    ("kind", "option"), [("dcd", "reduction"), ("fmd", "latent_dim"), ("fd", "latent_dim")]
)
def test_an_option_of_another_method_is_a_value_error_naming_the_accepted_ones(
    kind: str, option: str
) -> None:
    with pytest.raises(ValueError, match=rf"a {kind} convolution .* has no option {option}; its options: "):
        create_conv2d(kind, 16, 16, 3, **{option: 4})
