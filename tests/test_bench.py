"""The speed benchmark's machinery on a tiny grid (no timing is asserted: targets live in its output)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from fmdconv import FMDConv2d
from fmdconv.cli import main
from fmdconv.profiling import bench
from fmdconv.profiling.bench import STATIC, Setting, Variant, naive_formulation, run_benchmark, write_results

TINY_VARIANTS = (STATIC, Variant("fmd", 4), Variant("fmd", 4, naive=True), Variant("od", 4))
TINY_GRID = (
    Setting("resnet18", "cifar", 8, 2, "train", 1, TINY_VARIANTS),
    Setting("resnet18", "cifar", 16, 1, "inference", 2, TINY_VARIANTS[:2]),
)


def test_tiny_run_writes_json_and_markdown(tmp_path):
    results = run_benchmark(TINY_GRID, threads=1, clock="cpu")
    json_path, markdown_path = write_results(results, tmp_path, "cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu.json", "cpu.md"]
    loaded = json.loads(json_path.read_text())
    assert [s["setting"] for s in loaded["settings"]] == [s.name for s in TINY_GRID]
    train = loaded["settings"][0]
    assert [row["variant"] for row in train["results"]] == ["static", "fmd n=4", "fmd n=4 naive", "od n=4"]
    for row in train["results"]:
        assert len(row["times_s"]) == 1 and row["median_s"] > 0
        assert row["peak_memory_mib"] is None or row["peak_memory_mib"] >= 0
    assert train["results"][0]["relative_to_static"] == 1.0
    assert loaded["clock"] == "cpu" and loaded["threads"] == 1
    assert len(loaded["settings"][1]["results"][1]["times_s"]) == 2
    targets = {(t["target"], t["setting"]) for t in loaded["targets"]}
    assert targets == {
        ("FMDConv n=4 training step / static", TINY_GRID[0].name),
        ("ODConv n=4 / FMDConv n=4 training step", TINY_GRID[0].name),
        ("naive / fmd n=4", TINY_GRID[0].name),
        ("FMDConv n=4 inference / static", TINY_GRID[1].name),
    }
    markdown = markdown_path.read_text()
    assert "## resnet18: time relative to static" in markdown
    assert "| fmd n=4 naive |" in markdown and "## Targets" in markdown


def test_variant_names_and_networks():
    assert Variant("fmd", 4, compiled=True).name == "fmd n=4 compiled"
    assert Variant("static", channels_last=True).name == "static channels_last"
    assert Variant("od", 1, naive=True).name == "od n=1 naive"
    # A compiled variant wraps the eager network; channels_last needs its own copy of the weights.
    assert Variant("fmd", 4, compiled=True).network == Variant("fmd", 4).network
    assert Variant("fmd", 4, channels_last=True).network != Variant("fmd", 4).network


def test_channels_last_variant_runs_side_by_side():
    variants = (STATIC, Variant("fmd", 2), Variant("fmd", 2, channels_last=True))
    results = run_benchmark(
        [Setting("resnet18", "cifar", 8, 2, "train", 1, variants)], threads=1, clock="cpu"
    )
    names = [row["variant"] for row in results["settings"][0]["results"]]
    assert names == ["static", "fmd n=2", "fmd n=2 channels_last"]


def test_naive_formulation_is_restored():
    model = nn.Sequential(FMDConv2d(4, 4, 3), nn.ReLU(), FMDConv2d(4, 4, 3))
    model[2].formulation = "matmul"
    with naive_formulation(model):
        assert all(m.formulation == "grouped" and not m.fold_attentions for m in (model[0], model[2]))
    assert (model[0].formulation, model[2].formulation) == ("auto", "matmul")
    assert model[0].fold_attentions and model[2].fold_attentions


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="the first variant must be static"):
        run_benchmark([Setting("resnet18", "cifar", 8, 1, "inference", 1, (Variant("fmd", 1),))], threads=1)
    with pytest.raises(ValueError, match="use it with threads=1"):
        run_benchmark(TINY_GRID, threads=2, clock="cpu")
    with pytest.raises(ValueError, match="clock must be one of wall, cpu"):
        run_benchmark(TINY_GRID, threads=1, clock="gpu")


def test_cli_runs_the_grid_and_restores_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(
        bench, "DEFAULT_SETTINGS", [Setting("resnet18", "cifar", 8, 1, "inference", 1, (STATIC,))]
    )
    threads = torch.get_num_threads()
    assert (
        main(["bench", "--out", str(tmp_path), "--threads", "1", "--name", "tiny", "--quiet-wait", "0"]) == 0
    )
    assert (tmp_path / "tiny.json").exists() and (tmp_path / "tiny.md").exists()
    assert torch.get_num_threads() == threads


def test_cli_compile_grid_writes_its_own_files(tmp_path, monkeypatch):
    # The real compile grid takes minutes to compile; the CLI's choice of grid and file name is checked.
    tiny = [Setting("resnet18", "cifar", 8, 1, "inference", 1, (STATIC,))]
    monkeypatch.setattr(bench, "COMPILE_SETTINGS", tiny)
    assert main(["bench", "--compile", "--out", str(tmp_path), "--threads", "1", "--quiet-wait", "0"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu-compile.json", "cpu-compile.md"]
    with pytest.raises(SystemExit):
        main(["bench", "--compile", "--full"])
