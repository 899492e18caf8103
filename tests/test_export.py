"""Export and compilation: ONNX with a dynamic batch axis, and torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fmdconv import CondConv2d, DyConv2d, FMDConv2d, ODConv2d
from onnx_check import assert_onnx_matches_at_other_batch_sizes
from reference import randomise

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

METHODS = (CondConv2d, DyConv2d, ODConv2d, FMDConv2d)


def small_net(method: type) -> nn.Module:
    """Three dynamic layers with randomised attention weights at temperature 1, so that attentions
    vary across samples and a per-sample error would show."""
    model = nn.Sequential(
        method(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        method(8, 8, 3, stride=2, padding=1, groups=2),
        method(8, 16, 1),
        nn.AdaptiveAvgPool2d(1),
    )
    return randomise(model, gate=1.0, kernel=1.0).eval()


@pytest.mark.parametrize("method", METHODS)
def test_onnx_export_runs_at_another_batch_size(method):
    assert_onnx_matches_at_other_batch_sizes(small_net(method), (3, 12, 12))


@pytest.mark.parametrize("method", [FMDConv2d, ODConv2d])
def test_torch_compile_matches_eager(method):
    model = small_net(method)
    compiled = torch.compile(model)
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-4)
