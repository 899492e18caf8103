"""`fmdconv compare` on a tiny synthetic setting: the table, results.json and the PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from fmdconv.cli import main
from fmdconv.experiments.comparison import DEFAULT_METHODS, PLOT_FILES, MethodResult, compare, write_report
from fmdconv.experiments.sweep import check_reusable
from fmdconv.metrics import ies, rcs
from test_train import TINY


def test_compare_writes_the_table_results_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = TINY.replace(subset=64, test_subset=32, epochs=1)
    results = compare(recipe, tmp_path, progress=False)
    assert [r.method for r in results] == list(DEFAULT_METHODS)
    assert [r.label for r in results] == ["Static", "CondConv", "DyConv", "ODConv", "FMDConv"]
    static, *dynamic = results
    assert all(r.params > static.params and r.macs > static.macs for r in dynamic)
    for r in results:
        assert r.seconds_per_epoch > 0 and r.latency_seconds > 0 and 0 <= r.top1 <= r.top5 <= 1
        assert r.ies == ies(r.seconds_per_epoch, r.top1) and r.rcs == rcs(r.seconds_per_epoch, r.top1)
        assert (Path(r.run_dir) / "last.pt").is_file()

    report = (tmp_path / "report.md").read_text()
    table, health = markdown_tables(report)
    assert table[0].startswith(
        "| Method | Params | MACs | Train time / epoch | Latency (batch 1) | Top-1 | Top-5"
    )
    assert len(table) == 2 + len(results)
    assert table[-1].startswith("| FMDConv |") and f"{results[-1].top1:.2%}" in table[-1]
    # The health table: static has no attention (-), the dynamic methods a saturation and a max-prob.
    assert health[0].startswith("| Method | Max grad norm | Grad spikes | Saturated gates | Kernel max-prob")
    assert health[2].split(" | ")[3:5] == ["-", "-"]
    assert all(r.grad_norm_max > 0 and len(r.epoch_top1) == 1 for r in results)
    assert results[1].gate_saturation is not None and results[1].kernel_max_prob is None  # CondConv
    assert results[3].gate_saturation is not None and 0.25 <= results[3].kernel_max_prob <= 1  # ODConv
    for name in PLOT_FILES.values():
        assert f"]({name})" in report
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.width > 300
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [m["top1"] for m in saved["methods"]] == [r.top1 for r in results]
    assert saved["recipe"]["dataset"] == "synthetic" and saved["wall_seconds"] > 0
    assert not list(tmp_path.glob(".*tmp*"))

    # Running it again continues in the same folder: finished runs are reused, not retrained.
    recipe.save(tmp_path / "recipe.json")
    command = ["compare", "--recipe", str(tmp_path / "recipe.json"), "--methods", "static", "fmd"]
    command += ["--out", str(tmp_path), "--no-progress"]
    assert main(command) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows] == ["| Method", "| Static", "| FMDConv"]
    assert json.loads((tmp_path / "results.json").read_text())["methods"][1]["top1"] == results[-1].top1

    assert main([*command, "--lr", "0.5"]) == 2
    assert "runs/static holds a run of another recipe (lr 0.02 there, 0.5 now)" in capsys.readouterr().err
    # A reused run must match exactly: a longer (or shorter) run is refused, not mixed into the table.
    assert main([*command, "--epochs", "2"]) == 2
    assert "(epochs 1 there, 2 now)" in capsys.readouterr().err
    # Where the data is and how it is loaded change no result: such a run is reused.
    check_reusable(tmp_path / "runs" / "static", recipe.replace(conv="static", data_dir="~/x", num_workers=2))
    with pytest.raises(ValueError, match="methods must be distinct names"):
        compare(recipe, tmp_path, methods=("fmd", "fmd"))


def markdown_tables(text: str) -> list[list[str]]:
    """The Markdown tables of ``text``, each as its list of lines."""
    tables: list[list[str]] = []
    previous = ""
    for line in text.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
        previous = line
    return tables


def test_compare_with_seeds_reports_mean_and_std(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = TINY.replace(subset=64, test_subset=32, epochs=1, seed=3)
    command = ["compare", "--recipe", str(tmp_path / "recipe.json"), "--methods", "static", "dy"]
    recipe.save(tmp_path / "recipe.json")
    assert main([*command, "--seeds", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [(m["method"], m["seed"]) for m in saved["methods"]] == [
        ("static", 3),
        ("static", 4),
        ("dy", 3),
        ("dy", 4),
    ]
    assert saved["seeds"] == 2
    assert (tmp_path / "runs" / "dy" / "seed4" / "last.pt").is_file()
    top1 = [m["top1"] for m in saved["methods"][2:]]
    mean = sum(top1) / 2
    std = abs(top1[0] - top1[1]) / math.sqrt(2)
    table = markdown_tables((tmp_path / "report.md").read_text())[0]
    assert len(table) == 4 and f"| {mean:.2%} ± {std * 100:.2f} |" in table[3]
    assert "2 seeds per method (seed 3 on)" in (tmp_path / "report.md").read_text()
    assert f"{mean:.2%} ± {std * 100:.2f}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*command, "--seeds", "0", "--out", str(tmp_path)])
    assert "--seeds: must be an int >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seeds must be an int >= 1"):
        compare(recipe, tmp_path, methods=("static",), seeds=0)


def test_a_method_with_no_correct_answer_gets_no_score_bars(tmp_path: Path) -> None:
    common = {
        "params": 10,
        "macs": 100,
        "epochs": 1,
        "seconds_per_epoch": 2.0,
        "train_images_per_second": 5.0,
    }
    common |= {"latency_seconds": 0.01, "top5": 0.5, "run_dir": str(tmp_path)}
    results = [
        MethodResult("static", "Static", top1=0.5, best_top1=0.5, ies=4.0, rcs=0.25, **common),
        MethodResult("fmd", "FMDConv", top1=0.0, best_top1=0.0, ies=math.inf, rcs=0.0, **common),
    ]
    write_report(tmp_path, TINY, results, 1, torch.device("cpu"), wall_seconds=3.0)
    report = (tmp_path / "report.md").read_text()
    assert "| FMDConv |" in report and "| 0.00% | 50.00% | ∞ | 0.0000 |" in report
    assert "No IES/RCS bars for FMDConv (top-1 = 0)." in report and (tmp_path / "scores.png").is_file()
    assert json.loads((tmp_path / "results.json").read_text())["methods"][1]["ies"] is None


def test_adding_seeds_reuses_the_one_seed_run_as_its_seed(tmp_path: Path) -> None:
    recipe = TINY.replace(subset=64, test_subset=32, epochs=1)
    (single,) = compare(recipe, tmp_path, methods=("static",), progress=False)
    trained = Path(single.run_dir) / "last.pt"
    written = trained.stat().st_mtime_ns
    first, second = compare(recipe, tmp_path, methods=("static",), seeds=2, progress=False)
    # Seed 0 is the one-seed run, where it is (not trained again into runs/static/seed0/).
    assert first.run_dir == single.run_dir == str(tmp_path / "runs" / "static")
    assert first.top1 == single.top1 and trained.stat().st_mtime_ns == written
    assert second.seed == 1 and second.run_dir == str(tmp_path / "runs" / "static" / "seed1")
    assert not (tmp_path / "runs" / "static" / "seed0").exists()
    # The other way round, one seed (seed 1) reuses the run of that seed in runs/static/seed1/.
    (again,) = compare(recipe.replace(seed=1), tmp_path, methods=("static",), progress=False)
    assert again.run_dir == second.run_dir and again.top1 == second.top1


def test_a_diverged_run_is_a_failed_row_the_health_table_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A learning rate of 1e30 overflows the weights in the first steps: the loss or the logits turn
    # non-finite, so neither run may show an accuracy, and the comparison still writes its report.
    recipe = TINY.replace(subset=64, test_subset=32, epochs=1, lr=1e30)
    recipe.save(tmp_path / "recipe.json")
    command = ["compare", "--recipe", str(tmp_path / "recipe.json"), "--methods", "static", "fmd"]
    assert main([*command, "--out", str(tmp_path), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "fmdconv compare: error: 2 of 2 runs failed" in captured.err
    table, health = markdown_tables((tmp_path / "report.md").read_text())
    assert table[2].startswith("| Static | 0.")
    assert table[2].endswith("| - | - | **failed** | **failed** | - | - |")
    assert all(row.endswith("| **1** |") for row in health[2:])
    assert "**FMDConv failed** (seed 0" in (tmp_path / "report.md").read_text()
    saved = json.loads((tmp_path / "results.json").read_text())  # valid JSON: no NaN
    assert saved["failed_runs"] == 2
    for method in saved["methods"]:
        assert method["failure"] and method["params"] > 0
        assert method["top1"] is None and method["top5"] is None and method["ies"] is None
    assert not (tmp_path / "accuracy_vs_time.png").exists()


def test_a_method_with_a_failed_seed_shows_no_accuracy(tmp_path: Path) -> None:
    common = {"params": 10, "macs": 100, "epochs": 1, "train_images_per_second": 5.0}
    common |= {"latency_seconds": 0.01, "top5": 0.5, "run_dir": str(tmp_path)}
    finished = {"seconds_per_epoch": 2.0, "top1": 0.5, "best_top1": 0.5, "ies": 4.0, "rcs": 0.25}
    failed = dict.fromkeys(("seconds_per_epoch", "top1", "top5", "best_top1", "ies", "rcs"))
    failure = "the training loss became nan at iteration 3: lower the learning rate"
    results = [
        MethodResult("static", "Static", **common, **finished),
        MethodResult("od", "ODConv", **common, **finished, seed=0, epoch_top1=(0.5,)),
        MethodResult("od", "ODConv", **(common | failed), seed=1, failure=failure, grad_norm_max=math.inf),
    ]
    assert [r.failed for r in results] == [False, False, True]
    write_report(tmp_path, TINY, results, 1, torch.device("cpu"), wall_seconds=3.0)
    report = (tmp_path / "report.md").read_text()
    table, health = markdown_tables(report)
    failed_cell = "**failed (1 of 2 seeds)**"
    assert table[3] == f"| ODConv | 0.00 M | 0.00 M | - | - | {failed_cell} | {failed_cell} | - | - |"
    assert health[0].endswith("| Failed runs |") and health[2].endswith("| 0 |")
    assert health[3].startswith("| ODConv | inf |") and health[3].endswith("| **1** of 2 |")
    assert f"- **ODConv failed** (seed 1, {tmp_path}): {failure}" in report
    assert "Not plotted: ODConv (failed, see below)." in report
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["failed_runs"] == 1 and saved["methods"][2]["top1"] is None
    assert saved["methods"][2]["grad_norm_max"] is None  # infinite: written as null, valid JSON
