"""The measured formulation choice and graph capture (docs/speed.md)."""

from __future__ import annotations

import pytest
import torch

from fmdconv import CondConv2d, DyConv2d, FMDConv2d, ODConv2d, set_formulation
from fmdconv.layers import choice_cache, formulations
from fmdconv.models import create_model
from reference import small_net

METHODS = (CondConv2d, DyConv2d, ODConv2d, FMDConv2d)


@pytest.fixture(autouse=True)
def _fresh_choices(tmp_path, monkeypatch):
    """Each test starts with no measured choice, a cache file of its own, and measuring as the suite
    has it (off) when it ends."""
    monkeypatch.setenv(choice_cache.CACHE_DIR_ENV, str(tmp_path))
    saved = choice_cache.benchmark
    formulations.clear_benchmark_cache()
    yield
    formulations.set_benchmark(saved)
    formulations.clear_benchmark_cache()


@pytest.mark.parametrize("method", [ODConv2d, FMDConv2d])
def test_measured_choice_changes_no_result_rng_or_running_stats(method, measurements):
    torch.manual_seed(1)
    measured_net = small_net(method).train()
    ruled_net = small_net(method).train()
    ruled_net.load_state_dict(measured_net.state_dict())
    x = torch.randn(4, 3, 10, 10)
    formulations.set_benchmark(False)
    ruled = ruled_net(x)
    ruled.sum().backward()
    formulations.set_benchmark(True)
    rng = torch.get_rng_state()
    measured = measured_net(x)
    measured.sum().backward()
    assert torch.equal(rng, torch.get_rng_state())
    torch.testing.assert_close(measured, ruled, atol=1e-5, rtol=1e-4)
    for (name, a), b in zip(measured_net.named_parameters(), ruled_net.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-3, msg=name)
    # The timing runs only the convolution: the gate trunk's BN saw exactly one batch, as without it.
    for a, b in zip(measured_net.buffers(), ruled_net.buffers(), strict=True):
        torch.testing.assert_close(a, b)
    # All three layers were timed once; ODConv's 3x3 ones (spatial attention) never with "mixed".
    assert ["mixed" in names for names in measurements] == [method is FMDConv2d] * 2 + [True]
    assert set(formulations.benchmark_choices().values()) <= set(formulations.CONVOLUTIONS)


def test_a_choice_is_cached_per_signature(measurements):
    layer = FMDConv2d(8, 8, 3, padding=1).train()
    x = torch.randn(2, 8, 6, 6)
    formulations.set_benchmark(True)
    layer(x)
    layer(x)
    assert len(measurements) == 1
    with torch.no_grad():  # grad mode is part of the signature
        layer(x)
    layer.eval()  # and so is training
    layer(x)
    layer(torch.randn(3, 8, 6, 6))  # and the input shape
    assert len(measurements) == 4
    assert len(formulations.benchmark_choices()) == 4


def test_opt_out_forcing_and_static_paths_never_time(measurements, monkeypatch):
    x = torch.randn(2, 8, 6, 6)
    formulations.set_benchmark(False)
    FMDConv2d(8, 8, 3, padding=1)(x)
    formulations.set_benchmark(True)
    forced = FMDConv2d(8, 8, 3, padding=1)
    set_formulation(forced, "matmul")
    forced(x)
    FMDConv2d(8, 8, 3, padding=1, kernel_num=1)(x)  # one static convolution: nothing to choose
    assert measurements == []
    assert formulations.benchmark_enabled()
    formulations.set_benchmark(None)  # back to the environment, which the suite sets to 0
    assert not formulations.benchmark_enabled()
    monkeypatch.setenv(choice_cache.MEASURE_ENV, "1")
    assert formulations.benchmark_enabled()
    with pytest.raises(ValueError, match="enabled must be True, False or None, got 'yes'"):
        formulations.set_benchmark("yes")


def test_candidates_follow_availability(monkeypatch):
    x = torch.randn(2, 8, 6, 6)
    assert formulations.candidate_formulations({"kernel": x}, x) == ("grouped", "mixed", "matmul")
    assert formulations.candidate_formulations({"spatial": x}, x) == ("grouped", "matmul")
    monkeypatch.setitem(formulations.AVAILABILITY, "matmul", lambda t: t.is_cuda)
    assert formulations.candidate_formulations({"kernel": x}, x) == ("grouped", "mixed")


def test_compiling_uses_the_cache_or_the_rule_and_never_times(measurements):
    layer = FMDConv2d(8, 8, 3, padding=1).eval()
    formulations.set_benchmark(True)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    with torch.no_grad():
        x = torch.randn(2, 8, 6, 6)
        torch.testing.assert_close(compiled(x), layer(x))  # compiled first: the rule, then eager times
        torch._dynamo.reset()
        torch.testing.assert_close(compiled(x), layer(x))  # now with the cached choice
    assert len(measurements) == 1


@pytest.mark.parametrize("method", METHODS)
def test_layers_compile_as_one_graph(method):
    model = small_net(method).eval()
    x = torch.randn(2, 3, 10, 10)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("kind", ["fmd", "od"])  # every method's layers: above; a backbone takes seconds
def test_backbones_compile_as_one_graph(kind):
    model = create_model("resnet18", conv=kind, num_classes=10, stem="cifar", width=0.125).eval()
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 16, 16))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("kind", ["fmd", "od"])
def test_reduce_overhead_matches_eager_on_cuda(kind):
    model = create_model("resnet18", conv=kind, num_classes=10, stem="cifar", width=0.25).cuda().eval()
    compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True)
    x = torch.randn(1, 3, 32, 32, device="cuda")
    with torch.no_grad():
        for _ in range(3):  # the first calls record the graph; later ones replay it
            out = compiled(x).clone()
        torch.testing.assert_close(out, model(x), atol=1e-4, rtol=1e-3)
