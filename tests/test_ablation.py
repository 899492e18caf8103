"""Ablations (the FMDConv paper's Figure 5): tiny synthetic runs, the report files, resuming, validation."""

import argparse
import json
import math

import pytest
import torch
from PIL import Image

from fmdconv.cli import ablate as ablate_command
from fmdconv.explain.ablation import FACTORS, ablate, ablation_values
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
