"""Ablations (the FMDConv paper's Figure 5): tiny synthetic runs, the report files, resuming, validation."""

import argparse
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

import fmdconv.experiments
import fmdconv.explain
import fmdconv.train
from fmdconv.cli import ablate as ablate_command
from fmdconv.experiments import FACTORS, AblationResult, ablate, ablation_values
from fmdconv.experiments.ablation import write_ablation_report
from fmdconv.experiments.factors import warn_if_annealed_at_once
from fmdconv.train import build_model
from fmdconv.train.checkpoint import LAST_CHECKPOINT, load_checkpoint
from fmdconv.train.recipe import Recipe

# One epoch of two 32-image batches of 16x16 synthetic images through a quarter-width MobileNetV2.
TINY = Recipe(
    model="mobilenet_v2",
    width=0.25,
    stem="cifar",
    dataset="synthetic",
    image_size=16,
    subset=64,
    test_subset=32,
    batch_size=32,
    epochs=1,
    milestones=(),
    temperature_warm_epochs=1,
)
TINY_FLAGS = [
    *("--model", "mobilenet_v2", "--width", "0.25", "--stem", "cifar", "--dataset", "synthetic"),
    *("--image-size", "16", "--subset", "64", "--test-subset", "32", "--batch-size", "32", "--epochs", "1"),
    *("--milestones", "--temperature-warm-epochs", "1", "--no-progress"),
]


def main(argv: list[str]) -> int:
    """Run ``fmdconv ablate`` through its own parser (the sub-command registered alone)."""
    parser = argparse.ArgumentParser(prog="fmdconv")
    ablate_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def test_temperature_ablation_writes_table_json_and_plot_and_reuses_finished_runs(tmp_path) -> None:
    results = ablate(TINY, "temperature", tmp_path, values=["34", 100.0], progress=False)

    assert [r.value for r in results] == [34, 100]
    for result in results:
        assert 0 <= result.top1 <= result.top5 <= 1 and result.epochs == 1 and result.seconds_per_epoch > 0
    runs = sorted(path.name for path in (tmp_path / "runs").iterdir())
    assert runs == ["temperature-100", "temperature-34"]
    saved = load_checkpoint(tmp_path / "runs" / "temperature-100" / LAST_CHECKPOINT)
    assert saved["recipe"]["kernel_temperature_start"] == 100

    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["factor"] == "temperature" and summary["setting"] == "kernel_temperature_start"
    assert [row["top1"] for row in summary["results"]] == [r.top1 for r in results]
    report = (tmp_path / "report.md").read_text()
    assert "| Initial kernel temperature | Top-1 | Top-5 |" in report
    assert f"| 34 | {results[0].top1:.2%} | {results[0].top5:.2%} |" in report
    assert "![Top-1 and top-5 against initial kernel temperature](ablation.png)" in report
    # Training health per value, as in the compare report.
    assert "| Initial kernel temperature | Max grad norm | Grad spikes | Saturated gates |" in report
    for result in results:
        assert result.grad_norm_max > 0 and result.epoch_top1 == (result.top1,)
        assert result.gate_saturation is not None and 0.25 <= result.kernel_max_prob <= 1
    first = results[0]
    assert f"| 34 | {first.grad_norm_max:.3g} | {first.grad_spikes} | {first.gate_saturation:.1%} |" in report
    with Image.open(tmp_path / "ablation.png") as plot:
        assert plot.format == "PNG"

    again = ablate(TINY, "temperature", tmp_path, values=[34, 100], progress=False)
    assert again == results  # finished runs are reused, not retrained


def test_attention_ablation_trains_with_the_other_attentions_off(tmp_path) -> None:
    ablate(TINY, "attentions", tmp_path, values=["all", "none"], progress=False)

    torch.manual_seed(TINY.seed)  # the trainer seeds, then builds the model: the same initial weights
    initial = build_model(TINY).state_dict()
    trained = {
        kept: load_checkpoint(tmp_path / "runs" / f"attentions-{kept}" / LAST_CHECKPOINT)["model"]
        for kept in ("all", "none")
    }
    gate = "features.18.0.gate.heads.input.weight"  # the head convolution's input attention
    kernel_path = "features.18.0.kernel_path.fc2.weight"
    for name in (gate, kernel_path):
        assert torch.equal(trained["none"][name], initial[name])  # switched off: never updated
        assert not torch.equal(trained["all"][name], initial[name])


def test_ablate_command_prints_the_table_and_rejects_the_varied_setting_as_a_flag(tmp_path, capsys) -> None:
    out = tmp_path / "schedule"
    code = main(
        ["ablate", "--factor", "schedule", "--values", "degraded", "constant", "--out", str(out), *TINY_FLAGS]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "| Kernel temperature schedule | Top-1 |" in printed and "| constant |" in printed
    assert (out / "ablation.png").is_file() and (out / "report.md").is_file()

    code = main(["ablate", "--factor", "kernel_num", "--kernel-num", "2", "--out", str(tmp_path / "n")])
    assert code == 2
    assert "--kernel-num is what --factor kernel_num varies" in capsys.readouterr().err


def test_factor_values_defaults_and_validation() -> None:
    assert ablation_values("temperature", TINY)[1] == (34, 40, 52, 61, 100)
    assert ablation_values("kernel_num", TINY, ["1", "4"])[1] == (1, 4)
    assert ablation_values("attentions", TINY)[1] == ("all", "input", "kernel", "output", "none")
    assert ablation_values("attentions", TINY.replace(conv="od"), ["output+input", "all"])[1] == (
        "input+output",
        "all",
    )
    assert set(FACTORS) == {"temperature", "kernel_num", "schedule", "attentions"}
    bad = [
        (("speed", TINY), "factor must be one of temperature, kernel_num, schedule, attentions"),
        (("temperature", TINY, ["34"]), "at least two distinct values"),
        (("temperature", TINY, ["34", "34.0"]), "at least two distinct values"),
        (("temperature", TINY, ["34", "hot"]), "values of temperature"),
        (("kernel_num", TINY, ["0", "2"]), "kernel_num must be an int >= 1"),
        (("schedule", TINY, ["degraded", "cosine"]), "schedule must be one of degraded, constant, step"),
        (("attentions", TINY, ["all", "spatial"]), "spatial, which a fmd model lacks"),
        (("attentions", TINY, ["all", "input+colour"]), "joined by '\\+'"),
        (("temperature", TINY.replace(conv="static")), "needs a dynamic conv"),
        (("temperature", TINY.replace(conv="cond")), "needs a conv with a kernel temperature"),
        (("schedule", TINY.replace(kernel_num=1)), "needs kernel_num >= 2"),
    ]
    for arguments, message in bad:
        with pytest.raises(ValueError, match=message):
            ablation_values(*arguments)


def test_ablate_with_seeds_trains_each_seed_and_reports_mean_and_std(tmp_path, capsys) -> None:
    flags = ["--factor", "attentions", "--values", "all", "none", "--seeds", "2", "--seed", "5"]
    assert main(["ablate", *flags, "--out", str(tmp_path), *TINY_FLAGS]) == 0
    printed = capsys.readouterr().out

    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["seeds"] == 2
    runs = [(row["value"], row["seed"]) for row in summary["results"]]
    assert runs == [("all", 5), ("all", 6), ("none", 5), ("none", 6)]
    gate = "features.18.0.gate.heads.input.weight"  # switched off in the "none" runs: never updated
    for seed in (5, 6):
        saved = load_checkpoint(tmp_path / "runs" / "attentions-none" / f"seed{seed}" / LAST_CHECKPOINT)
        torch.manual_seed(seed)  # each seed's model starts from that seed's initial weights
        assert saved["recipe"]["seed"] == seed
        assert torch.equal(saved["model"][gate], build_model(TINY).state_dict()[gate])

    top1 = [row["top1"] for row in summary["results"][:2]]
    mean, std = sum(top1) / 2, abs(top1[0] - top1[1]) / math.sqrt(2)
    row = f"| all | {mean:.2%} ± {std * 100:.2f} |"
    report = (tmp_path / "report.md").read_text()
    assert row in report and row in printed and "| Attentions kept | Top-1 | Top-5 | Best top-1 |" in printed
    assert "2 seeds per value (seed 5 on)" in report

    with pytest.raises(SystemExit):
        main(["ablate", "--factor", "temperature", "--seeds", "0", "--out", str(tmp_path)])
    assert "--seeds: must be an int >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seeds must be an int >= 1"):
        ablate(TINY, "temperature", tmp_path, seeds=0, progress=False)


def test_a_factor_the_method_lacks_is_refused_naming_factor_and_method(tmp_path, capsys) -> None:
    # DCD and KernelWarehouse mix no kernels: their layers take no kernel_num, so every value would
    # train the same model.
    for conv, layer in (("dcd", "DCDConv2d"), ("kw", "KWConv2d")):
        with pytest.raises(
            ValueError,
            match=rf"the kernel_num ablation varies kernel_num, which a {conv} convolution \({layer}\) "
            "does not have",
        ):
            ablation_values("kernel_num", TINY.replace(conv=conv), ["1", "2"])
    assert ablation_values("kernel_num", TINY.replace(conv="fd"), ["1", "2"])[1] == (1, 2)
    out = tmp_path / "dcd"
    command = ["ablate", "--factor", "kernel_num", "--conv", "dcd", "--values", "1", "2", "--out", str(out)]
    assert main(command) == 2
    assert "kernel_num, which a dcd convolution (DCDConv2d) does not have" in capsys.readouterr().err
    assert not out.exists()


def test_a_temperature_schedule_over_within_one_iteration_warns(tmp_path) -> None:
    # Two iterations per epoch and 0.2 warm epochs: the schedule is 0.4 iterations long, so the
    # temperature is 1 from the first step whatever it starts from.
    short = TINY.replace(temperature_warm_epochs=0.2)
    with pytest.warns(UserWarning, match=r"the temperature schedule lasts 0\.4 iterations .* same model"):
        results = ablate(short, "temperature", tmp_path, values=[34, 100], progress=False)
    assert results[0].top1 == results[1].top1 and results[0].grad_norm_max == results[1].grad_norm_max
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_annealed_at_once(FACTORS["temperature"], TINY, 2)  # two iterations: the values differ
        warn_if_annealed_at_once(FACTORS["schedule"], short, 2)  # degraded or constant still differ
        warn_if_annealed_at_once(FACTORS["temperature"], short.replace(kernel_temperature="constant"), 2)
    assert not caught


def test_a_failed_run_is_a_row_without_accuracy(tmp_path) -> None:
    failure = "test  1/1: the model's outputs are NaN or infinite for 32 of 32 images"
    common = {"epochs": 1, "run_seconds": 1.0, "run_dir": str(tmp_path), "seed": 0}
    results = [
        AblationResult(
            value=34, top1=0.5, top5=0.9, best_top1=0.5, best_epoch=1, seconds_per_epoch=1.0, **common
        ),
        AblationResult(
            value=100,
            top1=None,
            top5=None,
            best_top1=None,
            best_epoch=None,
            seconds_per_epoch=None,
            failure=failure,
            **common,
        ),
    ]
    write_ablation_report(tmp_path, FACTORS["temperature"], TINY, results, "a machine", 2.0)
    report = (tmp_path / "report.md").read_text()
    assert "| 100 | **failed** | **failed** | - | - |" in report and "| 34 | 50.00% | 90.00% |" in report
    assert "| 100 | 0 | 0 | - | - | - | **1** |" in report
    assert f"- **100 failed** (seed 0, {tmp_path}): {failure}" in report
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["failed_runs"] == 1 and saved["results"][1]["top1"] is None
    assert (tmp_path / "ablation.png").is_file()


def test_explain_loads_no_trainer_and_the_ablation_names_moved_to_experiments() -> None:
    code = (
        "import sys, fmdconv.explain\n"
        "loaded = ('fmdconv.train', 'fmdconv.profiling', 'fmdconv.experiments', 'matplotlib')\n"
        "print(sorted(name for name in sys.modules if name.startswith(loaded)))\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True
    )
    assert completed.stdout == "[]\n"
    # The old names still work, with a DeprecationWarning naming the new place.
    with pytest.warns(DeprecationWarning, match="fmdconv.explain.ablate moved to fmdconv.experiments.ablate"):
        assert fmdconv.explain.ablate is ablate
    with pytest.warns(DeprecationWarning, match="fmdconv.train.compare moved to fmdconv.experiments.compare"):
        assert fmdconv.train.compare is fmdconv.experiments.compare
