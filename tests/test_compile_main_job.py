"""benchmarks/compile_main_job.py runs and writes its table (``--quick``, with a backend that does not
generate code, so it takes seconds; its figures mean nothing)."""

from __future__ import annotations

import json

from fmdconv.train import compilation


def test_quick_run_writes_json_and_markdown(tmp_path, monkeypatch, benchmark_script):
    monkeypatch.setattr(compilation, "BACKEND", "eager")
    script = benchmark_script("compile_main_job")
    folder = script.main(["--quick", "--methods", "static", "fmd", "--out", str(tmp_path)])
    results = json.loads((folder / "compile-main-job.json").read_text())
    assert results["quick"] and results["machine"]["cpu"]
    assert [row["method"] for row in results["rows"]] == ["static", "fmd"]
    for row in results["rows"]:
        assert row["compile_s"] > 0 and row["eager_median_s"] > 0 and row["compiled_median_s"] > 0
        assert row["recipe_steps"] == 468 * 2  # 60,000 // 128 steps per epoch, 2 epochs
    markdown = (folder / "compile-main-job.md").read_text()
    assert "| fmd |" in markdown and "not a measurement" in markdown
