"""Export and compilation: ONNX with a dynamic batch axis, and torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fmdconv import CondConv2d, DyConv2d, FMDConv2d, ODConv2d
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
