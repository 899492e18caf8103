"""The GPU benchmark's CPU-runnable parts: its rows, ratios, writer, and a tiny dry run on the CPU."""

from __future__ import annotations

import json

from fmdconv.cli import main
from fmdconv.layers import formulations
from fmdconv.profiling import gpu_bench
from fmdconv.profiling.gpu_bench import Row, Sizes, add_ratios, gpu_rows, run_gpu_benchmark

TINY = Sizes(image_size=32, train_batch=2, infer_batch=2, train_iters=1, infer_iters=1, warmup=1)


def test_rows_put_the_resnet18_training_step_first_and_repeat_nothing():
    rows = gpu_rows()
    assert len(rows) == len(set(rows))
    assert rows[:3] == [Row("resnet18", "train_fp32", k) for k in ("static", "fmd", "od")]
    first_bf16 = rows.index(Row("resnet18", "train_bf16", "static"))
    forced = [r for r in rows[:first_bf16] if r.formulation != "auto"]
    expected = {("fmd", f) for f in formulations.CONVOLUTIONS} | {
        ("od", f) for f in formulations.CONVOLUTIONS if f != "mixed"
    }
    assert {(r.kind, r.formulation) for r in forced} == expected
    assert {"grouped", "mixed", "matmul", "triton"} <= set(formulations.CONVOLUTIONS)
    assert rows.index(Row("resnet18", "infer_b1_graph", "fmd")) < rows.index(
        Row("resnet50", "train_fp32", "static")
    )
    quick = gpu_rows(quick=True)
    assert all(r.arch == "resnet18" and r.formulation == "auto" for r in quick)
    # Every block has its static reference before its first dynamic row.
    for rows_ in (rows, quick):
        for i, row in enumerate(rows_):
            assert Row(row.arch, row.measurement, "static") in rows_[: i + 1]


def test_ratios_divide_by_the_static_row_of_the_same_block():
    def row(kind, measurement, ms, mib=None):
        return {
            "arch": "resnet18",
            "measurement": measurement,
            "kind": kind,
            "median_s": ms / 1e3,
            "peak_memory_mib": mib,
        }

    rows = [
        row("static", "train_fp32", 10, 400),
        row("fmd", "train_fp32", 25, 600),
        row("fmd", "infer_b64", 3),
    ]
    add_ratios(rows)
    assert rows[1]["relative_to_static"] == 2.5 and rows[1]["memory_relative_to_static"] == 1.5
    assert rows[2]["relative_to_static"] is None and rows[2]["memory_relative_to_static"] is None


def test_a_tiny_dry_run_on_the_cpu_writes_json_and_markdown(tmp_path):
    rows = [
        Row("resnet18", "train_fp32", "static"),
        Row("resnet18", "train_fp32", "od", "grouped"),
        Row("resnet18", "train_bf16", "static"),
        Row("resnet18", "train_bf16", "fmd", "mixed"),
        Row("resnet18", "infer_b1_graph", "static"),
        Row("resnet18", "train_fp32", "fmd", "triton"),  # compiled Triton kernels need CUDA
        Row("resnet18", "infer_b1_eager", "static"),
        Row("resnet18", "infer_b1_eager", "fmd"),
    ]
    results = run_gpu_benchmark(tmp_path, device="cpu", sizes=TINY, rows=rows)
    saved = json.loads((tmp_path / "gpu.json").read_text())
    assert [r["variant"] for r in saved["rows"]] == [
        "static",
        "od n=4 grouped",
        "static",
        "fmd n=4 mixed",
        "static",
        "fmd n=4",
    ]
    assert saved["rows"][0]["relative_to_static"] == 1.0 and saved["rows"][1]["relative_to_static"] > 0
    assert [s["reason"] for s in saved["skipped"]] == [
        "CUDA graphs need a CUDA device",
        "formulation 'triton' is not available on cpu",
    ]
    markdown = (tmp_path / "gpu.md").read_text()
    assert "## resnet18" in markdown and "| od n=4 grouped |" in markdown
    assert "CUDA graphs need a CUDA device" in markdown
    assert results["rows"][-1]["measured_choices"] == {}  # the measured choice is off on the CPU by default


def test_the_budget_skips_the_rows_after_it(tmp_path):
    rows = [Row("resnet18", "infer_b1_eager", "static"), Row("resnet18", "infer_b1_eager", "fmd")]
    results = run_gpu_benchmark(tmp_path, device="cpu", sizes=TINY, rows=rows, budget_s=0.0)
    assert results["rows"] == [] and all("time budget" in s["reason"] for s in results["skipped"])


def test_cli_gpu_grid_is_the_gpu_benchmark(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(gpu_bench, "run_gpu_benchmark", lambda out, **kw: calls.append((out, kw)))
    assert (
        main(["bench", "--gpu", "--quick", "--out", str(tmp_path), "--device", "cpu", "--budget", "5"]) == 0
    )
    assert calls[0][1]["device"] == "cpu" and calls[0][1]["quick"] and calls[0][1]["budget_s"] == 5
    assert main(["bench", "--quick"]) == 2


def test_cli_arch_keeps_only_that_networks_rows(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(gpu_bench, "run_gpu_benchmark", lambda out, **kw: calls.append((out, kw)))
    assert main(["bench", "--gpu", "--arch", "resnet50", "--out", str(tmp_path), "--device", "cpu"]) == 0
    rows = calls[0][1]["rows"]
    assert rows and {row.arch for row in rows} == {"resnet50"}
    assert [row for row in gpu_rows() if row.arch == "resnet50"] == rows
    assert calls[0][1]["rows"][0].kind == "static"
    assert main(["bench", "--arch", "resnet50"]) == 2
