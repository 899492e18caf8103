"""benchmarks/compile_main_job.py runs and writes its table (``--quick``, with a backend that does not
generate code, so it takes seconds; its figures mean nothing)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from fmdconv.train import compilation

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compile_main_job.py"


def test_quick_run_writes_json_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setattr(compilation, "BACKEND", "eager")
    spec = importlib.util.spec_from_file_location("compile_main_job", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = script.main(["--quick", "--methods", "static", "fmd", "--out", str(tmp_path)])
    results = json.loads((folder / "compile-main-job.json").read_text())
    assert results["quick"] and results["machine"]["cpu"]
    assert [row["method"] for row in results["rows"]] == ["static", "fmd"]
    for row in results["rows"]:
        assert row["compile_s"] > 0 and row["eager_median_s"] > 0 and row["compiled_median_s"] > 0
        assert row["recipe_steps"] == 468 * 2  # 60,000 // 128 steps per epoch, 2 epochs
    markdown = (folder / "compile-main-job.md").read_text()
    assert "| fmd |" in markdown and "not a measurement" in markdown
