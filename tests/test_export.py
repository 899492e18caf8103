"""Export and compilation: ONNX with a dynamic batch axis, and torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fmdconv import CondConv2d, DyConv2d, FMDConv2d, ODConv2d
from fmdconv.layers import create_conv2d
from onnx_check import assert_onnx_matches_at_other_batch_sizes
from reference import randomise, small_net

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

METHODS = (CondConv2d, DyConv2d, ODConv2d, FMDConv2d)


def randomised_net(method: type) -> nn.Module:
    """:func:`reference.small_net` with randomised attention weights at temperature 1, so that
    attentions vary across samples and a per-sample error would show."""
    return randomise(small_net(method), gate=1.0, kernel=1.0).eval()


@pytest.mark.parametrize("method", METHODS)
def test_onnx_export_runs_at_another_batch_size(method):
    assert_onnx_matches_at_other_batch_sizes(randomised_net(method), (3, 12, 12))


@pytest.mark.parametrize("method", [FMDConv2d, ODConv2d])
def test_torch_compile_matches_eager(method):
    model = randomised_net(method)
    compiled = torch.compile(model)
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["kw", "fd"])
def test_a_training_step_of_the_newest_methods_compiles_in_one_graph(kind):
    """KernelWarehouse and FDConv in training mode through ``torch.compile(fullgraph=True)`` (a graph
    break is an error), forward and backward (AOTAutograd), with eager's outputs and gradients."""
    net = nn.Sequential(create_conv2d(kind, 8, 8, 3, padding=1), nn.ReLU(), create_conv2d(kind, 8, 8, 1))
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    net.train()
    x = torch.randn(2, 8, 6, 6)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    results = []
    for model in (net, compiled):
        net.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in net.parameters()]))
    (eager_loss, eager_grads), (compiled_loss, compiled_grads) = results
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-4, atol=1e-6)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-4, atol=1e-6)
