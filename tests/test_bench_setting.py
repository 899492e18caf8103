"""benchmarks/bench_setting.py re-times one setting and writes it in fmdconv bench's format."""

from __future__ import annotations

import json

import pytest


def test_one_setting_is_timed_with_every_forced_formulation(tmp_path, benchmark_script):
    script = benchmark_script("bench_setting")
    argv = ["--stem", "cifar", "--image-size", "8", "--batch-size", "2", "--mode", "inference"]
    argv += ["--methods", "fmd", "--rounds", "1", "--threads", "1", "--name", "one", "--out", str(tmp_path)]
    json_path, markdown_path = script.main(argv)
    results = json.loads(json_path.read_text())
    (setting,) = results["settings"]
    names = {row["variant"] for row in setting["results"]}
    assert {"static", "fmd n=4", "fmd n=4 grouped", "fmd n=4 mixed", "fmd n=4 matmul"} <= names
    assert setting["repeats"] == 1 and [c["method"] for c in setting["formulation_choices"]] == ["fmd n=4"]
    assert results["machine"]["cpu"] and "auto / fastest" in markdown_path.read_text()


def test_bad_arguments_are_refused_by_name(capsys, benchmark_script):
    script = benchmark_script("bench_setting")
    with pytest.raises(SystemExit):
        script.main(["--rounds", "0"])
    assert "--rounds must be at least 1" in capsys.readouterr().err
