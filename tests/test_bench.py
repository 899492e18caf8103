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


def test_channels_last_variant_runs_side_by_side(monkeypatch):
    # What each timed iteration is given: are the input, the stem's weight and the first block
    # convolution's weights channels_last?
    seen: dict[int, set[tuple[bool, bool, bool]]] = {}
    time_once = bench._time_once

    def recording(model: nn.Module, inputs: torch.Tensor, *args: object) -> float:
        block_weight = model.layer1[0].conv1.weight  # (n, C_out, C_in, k, k) in a dynamic network
        formats = (
            inputs.is_contiguous(memory_format=torch.channels_last),
            model.conv1.weight.is_contiguous(memory_format=torch.channels_last),
            block_weight.flatten(0, -4).is_contiguous(memory_format=torch.channels_last),
        )
        seen.setdefault(id(model), set()).add(formats)
        return time_once(model, inputs, *args)

    monkeypatch.setattr(bench, "_time_once", recording)
    variants = (STATIC, Variant("fmd", 2), Variant("fmd", 2, channels_last=True))
    results = run_benchmark(
        [Setting("resnet18", "cifar", 8, 2, "train", 1, variants)], threads=1, clock="cpu"
    )
    names = [row["variant"] for row in results["settings"][0]["results"]]
    assert names == ["static", "fmd n=2", "fmd n=2 channels_last"]
    # Three networks in variant order, each always seen in one format: only the last channels_last.
    assert list(seen.values()) == [{(False, False, False)}, {(False, False, False)}, {(True, True, True)}]


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


class Timed(nn.Module):
    """A stand-in network whose iterations take the given times (seconds), in turn."""

    def __init__(self, times: dict[bool, list[float]]) -> None:
        super().__init__()
        self.times = {naive: iter(values) for naive, values in times.items()}


def fixed_times(model: Timed, inputs: torch.Tensor, mode: str, naive: bool, clock: object) -> float:
    return next(model.times[naive])


def measure_with_fixed_times(monkeypatch, setting: Setting, times: dict[Variant, list[float]]) -> dict:
    """``measure_setting`` with every iteration's time given (a warm-up round is not timed here:
    memory measurement is switched off, so ``times`` holds exactly the timed rounds)."""
    monkeypatch.setattr(bench, "_time_once", fixed_times)
    monkeypatch.setattr(bench, "_peak_memory_mib", lambda run, device: 42.0)
    models: dict = {}
    for variant, values in times.items():
        models.setdefault(variant.network, {})[variant.naive] = values
    networks = {network: Timed(per_naive) for network, per_naive in models.items()}
    return bench.measure_setting(setting, networks, torch.device("cpu"))


def test_ratios_speedups_targets_and_cells_from_fixed_times(monkeypatch):
    fmd, od, naive = Variant("fmd", 4), Variant("od", 4), Variant("fmd", 4, naive=True)
    train = Setting("resnet18", "cifar", 8, 2, "train", 3, (STATIC, fmd, od, naive))
    measured_train = measure_with_fixed_times(
        monkeypatch,
        train,
        {
            STATIC: [0.010, 0.030, 0.020],  # median 20 ms
            fmd: [0.040, 0.060, 0.050],  # median 50 ms: 2.5x static, exactly the threshold
            od: [0.100, 0.090, 0.095],  # median 95 ms: 1.9x FMDConv, short of 2x
            naive: [0.045, 0.040, 0.060],  # median 45 ms: faster than the fast path
        },
    )
    inference = Setting("resnet18", "imagenet", 16, 1, "inference", 1, (STATIC, fmd))
    measured_inference = measure_with_fixed_times(monkeypatch, inference, {STATIC: [0.010], fmd: [0.014]})
    rows = {row["variant"]: row for row in measured_train["results"]}
    assert rows["fmd n=4"]["relative_to_static"] == pytest.approx(2.5)
    assert rows["od n=4"]["relative_to_static"] == pytest.approx(4.75)
    assert (rows["fmd n=4"]["min_s"], rows["fmd n=4"]["max_s"]) == (0.040, 0.060)
    assert rows["static"]["peak_memory_mib"] == 42.0
    targets = bench.evaluate_targets([measured_train, measured_inference])
    summary = [
        (t["target"], t["setting"], pytest.approx(t["measured"]), t["threshold"], t["met"]) for t in targets
    ]
    assert summary == [
        ("FMDConv n=4 training step / static", train.name, 2.5, 2.5, True),
        ("ODConv n=4 / FMDConv n=4 training step", train.name, 1.9, 2.0, False),
        ("naive / fmd n=4", train.name, 0.9, 1.0, False),
        ("FMDConv n=4 inference / static", inference.name, 1.4, 1.5, True),
    ]
    results = {
        "device": "test CPU",
        "threads": 1,
        "clock": "wall",
        "dtype": "float32",
        "torch": "x",
        "created": "today",
        "wall_s": 1.0,
        "quiet_wait_s": 0.0,
        "settings": [measured_train, measured_inference],
        "targets": targets,
    }
    markdown = bench.to_markdown(results)
    assert "| static | 1.00 [0.50-1.50] (20 ms) | 1.00 (10 ms) |" in markdown
    assert "| fmd n=4 | 2.50 [2.00-3.00] | 1.40 |" in markdown
    assert "| od n=4 | 4.75 [4.50-5.00] |  |" in markdown
    assert "| fmd n=4 naive | 2.25 [2.00-3.00] |  |" in markdown
    assert f"| FMDConv n=4 training step / static | {train.name} | 2.50 | <= 2.5 | yes |" in markdown
    assert f"| ODConv n=4 / FMDConv n=4 training step | {train.name} | 1.90 | >= 2 | **no** |" in markdown
    assert f"| naive / fmd n=4 | {train.name} | 0.90 | >= 1 | **no** |" in markdown
    assert f"| FMDConv n=4 inference / static | {inference.name} | 1.40 | <= 1.5 | yes |" in markdown
    assert "| fmd n=4 | 42 | 42 |" in markdown  # the memory table


@pytest.mark.parametrize("flags", [["--threads", "0"], ["--clock", "cpu", "--threads", "2"]])
def test_cli_refuses_bad_thread_settings(tmp_path, capsys, flags):
    assert main(["bench", "--out", str(tmp_path), *flags]) == 2
    assert "--threads must be >= 1, and 1 with --clock cpu" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
