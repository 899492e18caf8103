"""The speed benchmark's machinery on a tiny grid (no timing is asserted: targets live in its output)."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from torch import nn

from fmdconv import FMDConv2d
from fmdconv.cli import main
from fmdconv.profiling import bench, probes
from fmdconv.profiling.authors_code import AUTHORS_CODE_ENV, authors_code_folders, find_releases
from fmdconv.profiling.bench import STATIC, Setting, Variant, naive_formulation, run_benchmark, write_results
from fmdconv.utils.machine import machine_record

TINY_VARIANTS = (
    STATIC,
    Variant("fmd", 4),
    Variant("fmd", 4, naive=True),
    Variant("od", 4),
    Variant("fmd", 4, formulation="matmul"),
    Variant("fmd", 4, formulation="mixed"),
)
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
    names = ["static", "fmd n=4", "fmd n=4 naive", "od n=4", "fmd n=4 matmul", "fmd n=4 mixed"]
    assert [row["variant"] for row in train["results"]] == names
    [choice] = train["formulation_choices"]
    assert choice["method"] == "fmd n=4" and set(choice["forced_s"]) == {"matmul", "mixed"}
    assert choice["auto_over_fastest"] == choice["auto_s"] / min(choice["forced_s"].values())
    for row in train["results"]:
        assert len(row["times_s"]) == 1 and row["median_s"] > 0
        assert row["peak_memory_mib"] is None or row["peak_memory_mib"] >= 0
    assert train["results"][0]["relative_to_static"] == 1.0
    assert loaded["clock"] == "cpu" and loaded["threads"] == 1
    assert loaded["machine"]["cpu"] == machine_record()["cpu"] and loaded["machine"]["threads"] == 1
    assert len(loaded["settings"][1]["results"][1]["times_s"]) == 2
    targets = {(t["target"], t["setting"]) for t in loaded["targets"]}
    assert targets == {
        ("FMDConv n=4 training step / static", TINY_GRID[0].name),
        ("ODConv n=4 / FMDConv n=4 training step", TINY_GRID[0].name),
        ("naive / fmd n=4", TINY_GRID[0].name),
        (f"fmd n=4 automatic / fastest forced ({choice['fastest']})", TINY_GRID[0].name),
        ("FMDConv n=4 inference / static", TINY_GRID[1].name),
    }
    markdown = markdown_path.read_text()
    assert (
        "## resnet18: time relative to static" in markdown
        and f"Machine: {machine_record()['cpu']} (" in markdown
    )
    assert "| fmd n=4 naive |" in markdown and "## Targets" in markdown
    assert "## Automatic formulation against each forced one" in markdown


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
    step = bench._step

    def recording(model: nn.Module, inputs: torch.Tensor, mode: str) -> None:
        block_weight = model.layer1[0].conv1.weight  # (n, C_out, C_in, k, k) in a dynamic network
        formats = (
            inputs.is_contiguous(memory_format=torch.channels_last),
            model.conv1.weight.is_contiguous(memory_format=torch.channels_last),
            block_weight.flatten(0, -4).is_contiguous(memory_format=torch.channels_last),
        )
        seen.setdefault(id(model), set()).add(formats)
        step(model, inputs, mode)

    monkeypatch.setattr(bench, "_step", recording)
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


def measure_with_fixed_times(monkeypatch, setting: Setting, times: dict[Variant, list[float]]) -> dict:
    """``measure_setting`` with every timed round's times given and no iteration run."""

    def fixed(runs, repeats, device, warmup, clock, before_round):
        for index in range(repeats):
            before_round(index)
        return {variant: times[variant] for variant in runs}

    monkeypatch.setattr(bench, "time_interleaved", fixed)
    monkeypatch.setattr(probes, "peak_memory_mib", lambda run, device: 42.0)
    networks = {variant.network: nn.Identity() for variant in times}
    return bench.measure_setting(setting, networks, torch.device("cpu"))


def test_ratios_speedups_targets_and_cells_from_fixed_times(monkeypatch):
    fmd, od, naive = Variant("fmd", 4), Variant("od", 4), Variant("fmd", 4, naive=True)
    matmul, grouped = Variant("fmd", 4, formulation="matmul"), Variant("fmd", 4, formulation="grouped")
    authors = Variant("fmd", 4, authors=True)
    train = Setting("resnet18", "cifar", 8, 2, "train", 3, (STATIC, fmd, od, naive, matmul, grouped, authors))
    measured_train = measure_with_fixed_times(
        monkeypatch,
        train,
        {
            STATIC: [0.010, 0.030, 0.020],  # median 20 ms
            fmd: [0.040, 0.060, 0.050],  # median 50 ms: 2.5x static, exactly the threshold
            od: [0.100, 0.090, 0.095],  # median 95 ms: 1.9x FMDConv, short of 2x
            naive: [0.045, 0.040, 0.060],  # median 45 ms: faster than the fast path
            matmul: [0.044, 0.045, 0.047],  # median 45 ms: the automatic choice is 1.11x the fastest
            grouped: [0.060, 0.061, 0.062],
            authors: [0.055, 0.060, 0.065],  # median 60 ms: 1.2x ours
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
        ("FMDConv n=4 training step / static", train.name, 2.5, 2.3, False),  # CIFAR stem: at most 2.3x
        ("authors' FMDConv code / FMDConv n=4 training step", train.name, 1.2, 1.1, True),
        ("ODConv n=4 / FMDConv n=4 training step", train.name, 1.9, 2.0, False),
        ("naive / fmd n=4", train.name, 0.9, 1.0, False),
        ("fmd n=4 automatic / fastest forced (matmul)", train.name, 50 / 45, 1.05, False),
        ("FMDConv n=4 inference / static", inference.name, 1.4, 1.5, True),
    ]
    [choice] = measured_train["formulation_choices"]
    assert choice["forced_s"] == {"matmul": 0.045, "grouped": 0.061} and not choice["within_margin"]
    results = {
        "machine": {**machine_record(), "cpu": "test CPU", "cpu_flags": ["avx2"], "threads": 1},
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
    assert f"| FMDConv n=4 training step / static | {train.name} | 2.50 | <= 2.3 | **no** |" in markdown
    assert f"| {train.name} | fmd n=4 | 50.0 | 45.0 | 61.0 | matmul | 1.11 **over** |" in markdown
    assert "| fmd n=4 authors' code | 3.00 [2.75-3.25] |  |" in markdown
    assert "Machine: test CPU (" in markdown and "avx2" in markdown
    assert f"| ODConv n=4 / FMDConv n=4 training step | {train.name} | 1.90 | >= 2 | **no** |" in markdown
    assert f"| naive / fmd n=4 | {train.name} | 0.90 | >= 1 | **no** |" in markdown
    assert f"| FMDConv n=4 inference / static | {inference.name} | 1.40 | <= 1.5 | yes |" in markdown
    assert "| fmd n=4 | 42 | 42 |" in markdown  # the memory table


@pytest.mark.parametrize("flags", [["--threads", "0"], ["--clock", "cpu", "--threads", "2"]])
def test_cli_refuses_bad_thread_settings(tmp_path, capsys, flags):
    assert main(["bench", "--out", str(tmp_path), *flags]) == 2
    assert "--threads must be >= 1, and 1 with --clock cpu" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_authors_code_is_loaded_from_its_folder_only(tmp_path, monkeypatch, capsys):
    release = tmp_path / "release"
    (release / "models").mkdir(parents=True)
    (release / "modules").mkdir()
    (release / "modules" / "tinyconv.py").write_text("from torch import nn\nConv = nn.Conv2d\n")
    (release / "models" / "fmd_resnet.py").write_text(
        "from torch import nn\n"
        "from modules.tinyconv import Conv\n"
        "def fmd_resnet18(num_classes, kernel_num):\n"
        "    return nn.Sequential(Conv(3, kernel_num, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(kernel_num, num_classes))\n"
    )
    variants = (STATIC, Variant("fmd", 4), Variant("fmd", 4, authors=True), Variant("od", 4, authors=True))
    grid = [
        Setting("resnet18", "imagenet", 16, 2, "train", 1, variants),
        Setting("resnet18", "cifar", 8, 2, "train", 1, variants[:3]),
    ]
    results = run_benchmark(grid, threads=1, clock="cpu", authors_code=[release])
    assert "modules" not in sys.modules and "modules.tinyconv" not in sys.modules
    assert str(release) not in sys.path and results["authors_code"] == {"fmd": str(release)}
    imagenet, cifar = results["settings"]
    assert [row["variant"] for row in imagenet["results"]] == ["static", "fmd n=4", "fmd n=4 authors' code"]
    assert [row["variant"] for row in cifar["results"]] == ["static", "fmd n=4"]
    reasons = {(s["setting"], s["variant"]): s["reason"] for s in results["skipped"]}
    assert reasons == {
        (grid[0].name, "od n=4 authors' code"): "the authors' od code was not given (--authors-code DIR)",
        (grid[1].name, "fmd n=4 authors' code"): "the authors' ResNets have the ImageNet stem only",
    }
    assert any(t["target"].startswith("authors' FMDConv code") for t in results["targets"])
    assert "## Skipped" in bench.to_markdown(results)

    monkeypatch.setenv(AUTHORS_CODE_ENV, f"{release}{os.pathsep}{tmp_path / 'missing'}")
    assert authors_code_folders() == [release, tmp_path / "missing"]
    assert authors_code_folders([tmp_path]) == [tmp_path]  # the flag wins over the variable
    assert main(["bench", "--out", str(tmp_path / "out"), "--threads", "1"]) == 2
    error = capsys.readouterr().err
    assert f"authors' code folder {str(tmp_path / 'missing')!r} does not exist" in error
    with pytest.raises(ValueError, match=r"holds neither models/fmd_resnet\.py or models/od_resnet\.py"):
        find_releases([tmp_path])


def test_cli_writes_into_the_machines_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.setattr(
        bench, "DEFAULT_SETTINGS", [Setting("resnet18", "cifar", 8, 1, "inference", 1, (STATIC,))]
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(AUTHORS_CODE_ENV, raising=False)
    assert main(["bench", "--threads", "1", "--quiet-wait", "0"]) == 0
    folder = tmp_path / "benchmarks" / "results" / machine_record()["slug"]
    assert sorted(p.name for p in folder.iterdir()) == ["cpu.json", "cpu.md"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_benchmark_without_cuda_is_a_clear_error(tmp_path, capsys):
    assert main(["bench", "--gpu", "--quick", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert (
        error.startswith("fmdconv bench: error: --gpu: device 'cuda' is not available")
        and "Traceback" not in error
    )
    assert list(tmp_path.iterdir()) == []
