"""KernelWarehouse and FDConv in the command line and the benchmarks: ``fmdconv profile --conv kw:R
--conv fd``, ``fmdconv compare --methods static kw fd``, their ``fmdconv bench`` rows, and the
scripts that time them against the authors' code (``benchmarks/bench_kernelwarehouse.py``,
``benchmarks/bench_fdconv.py``) in their quick mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fmdconv.cli import main
from fmdconv.profiling.bench import STATIC, Setting, Variant, run_benchmark
from test_train import TINY

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# The file of the authors' code each script needs, and the environment variable naming its folder
# for the quick runs (skipped without it).
AUTHORS_FILES = {
    "bench_kernelwarehouse.py": ("modules/kernel_warehouse.py", "FMDCONV_KW_CODE"),
    "bench_fdconv.py": ("FDConv_detection/mmdet_custom/FDConv.py", "FMDCONV_FD_CODE"),
}


def test_profile_takes_kernelwarehouse_ratios_and_fdconv(capsys: pytest.CaptureFixture[str]) -> None:
    command = ["profile", "--model", "resnet18", "--conv", "static", "--conv", "kw:4", "--conv", "kw:1/4"]
    assert main([*command, "--conv", "fd", "--no-speed", "--json", "--input-size", "32"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["conv"], e["kw_ratio"], e["kernel_num"]) for e in entries] == [
        ("static", None, None),
        ("kw", "4", None),
        ("kw", "1/4", None),
        ("fd", None, 4),
    ]
    # The authors' code's counts (tests/test_kernelwarehouse.py, tests/test_fdconv.py).
    assert [e["params"] for e in entries[1:]] == [45_862_085, 4_031_768, 12_239_512]
    assert (
        main(
            [
                "profile",
                "--model",
                "resnet18",
                "--conv",
                "kw:2",
                "--conv",
                "fd:64",
                "--no-speed",
                "--input-size",
                "32",
            ]
        )
        == 0
    )
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
    assert ["kw", "2x"] in rows and ["fd", "64"] in rows
    with pytest.raises(SystemExit):
        main(["profile", "--model", "resnet18", "--conv", "kw:3", "--no-speed"])
    assert "kw_ratio must be one of 1/4, 1/2, 1, 2, 4" in capsys.readouterr().err


def test_compare_trains_static_kernelwarehouse_and_fdconv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = TINY.replace(width=0.25, subset=32, test_subset=16, epochs=1)
    recipe.save(tmp_path / "recipe.json")
    command = ["compare", "--recipe", str(tmp_path / "recipe.json"), "--methods", "static", "kw", "fd"]
    assert main([*command, "--out", str(tmp_path / "report"), "--no-progress"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows] == ["| Method", "| Static", "| KernelWarehouse", "| FDConv"]
    saved = json.loads((tmp_path / "report" / "results.json").read_text())["methods"]
    assert [m["method"] for m in saved] == ["static", "kw", "fd"]
    assert all(m["params"] > saved[0]["params"] and m["macs"] > saved[0]["macs"] for m in saved[1:])


def test_bench_times_kernelwarehouse_and_fdconv_beside_static() -> None:
    variants = (STATIC, Variant("kw", 1), Variant("fd", 4))
    results = run_benchmark([Setting("resnet18", "cifar", 8, 1, "inference", 1, variants)], threads=1)
    rows = results["settings"][0]["results"]
    assert [row["variant"] for row in rows] == ["static", "kw 1x", "fd n=4"]
    assert all(row["median_s"] > 0 for row in rows)


def run_script(script: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )


@pytest.mark.parametrize("script", sorted(AUTHORS_FILES))
def test_authors_comparison_without_their_code_says_so(script: str, tmp_path: Path) -> None:
    done = run_script(script, str(tmp_path / "absent"), "--quick", "--out-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"skipped: no {AUTHORS_FILES[script][0]} under" in done.stderr
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("script", sorted(AUTHORS_FILES))
def test_authors_comparison_quick_run(script: str, tmp_path: Path) -> None:
    file, variable = AUTHORS_FILES[script]
    folder = Path(os.environ.get(variable, "/nonexistent"))
    if not (folder / file).is_file():
        pytest.skip(f"{variable} does not name a folder of the authors' code (holding {file})")
    done = run_script(script, str(folder), "--quick", "--out-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    stem = script.removeprefix("bench_").removesuffix(".py")
    results = json.loads((tmp_path / f"{stem}-quick.json").read_text())
    assert [row["mode"] for row in results["results"]] == ["train", "infer"]
    assert all(row["max_relative_difference"] < 1e-4 for row in results["results"])
    assert "authors / fmdconv" in (tmp_path / f"{stem}-quick.md").read_text()
