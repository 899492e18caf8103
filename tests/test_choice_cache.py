"""The measured formulation choice's cache: across processes, by machine, and what turns it off."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fmdconv import FMDConv2d, ODConv2d
from fmdconv.layers import choice_cache, formulations

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True)
def _measuring_into(tmp_path, monkeypatch):
    """Measuring on, with a cache file of the test's own; off again (the suite's setting) at the end."""
    monkeypatch.setenv(choice_cache.CACHE_DIR_ENV, str(tmp_path))
    saved = choice_cache.benchmark
    formulations.set_benchmark(True)
    yield tmp_path / choice_cache.CACHE_FILE
    formulations.set_benchmark(saved)
    formulations.clear_benchmark_cache()


def one_call(layer: torch.nn.Module | None = None) -> None:
    (layer or FMDConv2d(8, 8, 3, padding=1).train())(torch.randn(2, 8, 6, 6))


CHILD = """
import torch
from fmdconv import FMDConv2d, measurement_report, set_benchmark
set_benchmark(True)
torch.manual_seed(0)
FMDConv2d(8, 8, 3, padding=1).train()(torch.randn(2, 8, 6, 6))
report = measurement_report()
print(report.measured, report.loaded)
"""


def run_child(cache_dir: Path) -> tuple[int, int]:
    env = {**os.environ, choice_cache.CACHE_DIR_ENV: str(cache_dir), "PYTHONPATH": str(SRC)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    return int(out[0]), int(out[1])


def test_a_second_process_takes_the_choice_from_the_file(tmp_path):
    assert run_child(tmp_path) == (1, 0)  # measured, and written
    content = json.loads((tmp_path / choice_cache.CACHE_FILE).read_text())
    (table,) = content["machines"].values()
    assert len(table) == 1 and set(table.values()) <= set(formulations.CONVOLUTIONS)
    assert run_child(tmp_path) == (0, 1)  # found: nothing measured


def test_the_layer_keeps_its_choice_per_input_and_the_process_per_signature(measurements, _measuring_into):
    before = formulations.measurement_report()  # the process's totals so far
    layer = FMDConv2d(8, 8, 3, padding=1).train()
    one_call(layer)
    one_call(layer)
    one_call(FMDConv2d(8, 8, 3, padding=1).train())  # another layer of the same signature: the cache
    assert len(measurements) == 1
    report = formulations.measurement_report()
    assert report.measured == before.measured + 1 and report.loaded == before.loaded
    assert report.enabled and report.path == _measuring_into
    assert 0 < report.seconds - before.seconds < 60 and "signature(s) timed" in str(report)


@pytest.mark.parametrize("content", ["{not json", '{"format": "something else", "machines": []}', "[1, 2]"])
def test_a_corrupt_or_foreign_file_is_replaced(content, measurements, _measuring_into):
    _measuring_into.write_text(content)
    formulations.clear_benchmark_cache()
    one_call()
    assert len(measurements) == 1
    written = json.loads(_measuring_into.read_text())
    assert written["format"] == choice_cache.FILE_FORMAT
    assert list(written["machines"]) == [choice_cache.machine_key()]


def test_choices_are_kept_per_machine(measurements, _measuring_into, monkeypatch):
    one_call()
    here = choice_cache.machine_key()
    monkeypatch.setattr(choice_cache, "machine_key", lambda: "another CPU | avx2 | torch 0")
    choice_cache.CHOICES._loaded_from = None  # as a new process on that machine: read the file again
    one_call()
    assert len(measurements) == 2  # this machine's choice does not hold there
    machines = json.loads(_measuring_into.read_text())["machines"]
    assert set(machines) == {here, "another CPU | avx2 | torch 0"}


def test_an_unwritable_cache_directory_keeps_the_choices_in_the_process(measurements, tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv(choice_cache.CACHE_DIR_ENV, str(blocked / "fmdconv"))  # under a file: cannot mkdir
    layer = FMDConv2d(8, 8, 3, padding=1).train()
    one_call(layer)
    one_call(FMDConv2d(8, 8, 3, padding=1).train())
    assert len(measurements) == 1


def test_switched_off_the_rule_decides(measurements, monkeypatch):
    layer = ODConv2d(8, 8, 3, padding=1).train()
    x = torch.randn(2, 8, 6, 6)
    monkeypatch.setenv(choice_cache.MEASURE_ENV, "0")
    formulations.set_benchmark(None)  # follow the environment
    rule = formulations.choose_formulation(
        layer.attentions(x), layer.kernel_num, layer._geometry, x.shape, layer.out_channels
    )
    layer(x)
    assert measurements == [] and set(layer._choices.by_input.values()) == {rule}
    formulations.set_benchmark(True)  # switching on again forgets the layer's rule-made choices
    layer(x)
    assert len(measurements) == 1


def test_tracing_exporting_and_compiling_never_measure(measurements):
    layer = FMDConv2d(8, 8, 3, padding=1).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        torch.jit.trace(layer, x, check_trace=False)  # (its check reruns the layer eagerly)
        torch.onnx.export(layer, (x,), io.BytesIO(), dynamo=False)
        torch.compile(layer, backend="eager", fullgraph=True)(x)
    assert measurements == []


def test_measuring_one_signature_is_bounded(monkeypatch):
    rounds: list[int] = []
    interleaved = formulations.time_interleaved

    def counting(*args, **kwargs):
        rounds.append(1)
        return interleaved(*args, **kwargs)

    monkeypatch.setattr(formulations, "time_interleaved", counting)
    layer = FMDConv2d(8, 8, 3, padding=1).train()
    x = torch.randn(2, 8, 6, 6)
    attentions = layer.attentions(x)
    names = formulations.candidate_formulations(attentions, x)
    arguments = (x, layer.weight, layer.bias, attentions, layer._geometry, names)
    times = formulations.measure_formulations(*arguments, budget_s=0.0)
    assert len(rounds) == 1 and set(times) == set(names)  # the budget spent: one timed round
    rounds.clear()
    formulations.measure_formulations(*arguments)  # milliseconds a round: every round
    assert len(rounds) == formulations.MEASURE_ROUNDS


def test_the_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(choice_cache.CACHE_DIR_ENV, str(tmp_path / "mine"))
    assert choice_cache.cache_path() == tmp_path / "mine" / choice_cache.CACHE_FILE
    monkeypatch.delenv(choice_cache.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert choice_cache.cache_dir() == tmp_path / "xdg" / "fmdconv"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert choice_cache.cache_dir() == tmp_path / "home" / ".cache" / "fmdconv"
