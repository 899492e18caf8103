"""benchmarks/bench_layer_overhead.py runs and writes its tables (``--quick``: tiny, no real timing)."""

from __future__ import annotations

import json


def test_quick_run_writes_json_and_markdown(tmp_path, benchmark_script):
    bench = benchmark_script("bench_layer_overhead")
    folder = bench.main(["--quick", "--out", str(tmp_path)])
    results = json.loads((folder / "layer-overhead.json").read_text())
    assert results["quick"] and results["machine"]["cpu"]
    assert {row["kind"] for row in results["overhead"]} == set(bench.CONV_KINDS)
    assert {row["mode"] for row in results["overhead"]} == set(bench.MODES)
    assert len(results["batch1"]) == len(bench.RESNET18_SHAPES)
    assert all(row["ratio"]["static"] == 1.0 for row in results["batch1"])
    markdown = (folder / "layer-overhead.md").read_text()
    assert "Host overhead" in markdown and "Batch-1 inference" in markdown and "not a measurement" in markdown
