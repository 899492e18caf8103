"""The Triton formulation under Triton's CPU interpreter, against the batch-folded formulation and the
per-sample reference: forward and the gradients of the input, the kernels, the bias and every attention."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="the triton formulation needs the optional triton package")
if os.environ.get("TRITON_INTERPRET") != "1":
    # conftest.py sets it on machines without CUDA; on a GPU use benchmarks/triton_gpu_check.py.
    pytest.skip("these tests run the kernels on CPU under TRITON_INTERPRET=1", allow_module_level=True)

from fmdconv import FMDConv2d, ODConv2d
from fmdconv.layers.formulations import CONVOLUTIONS, ConvGeometry, conv_grouped
from fmdconv.layers.triton_conv import triton_available
from reference import reference_forward
from test_layers import randomise

TOLERANCE = {"atol": 2e-5, "rtol": 1e-4}


def geometry(kernel, stride=1, padding=0, dilation=1, groups=1, pre_pad=None, pad_mode="zeros"):
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    return ConvGeometry(pair(kernel), pair(stride), pair(padding), pair(dilation), groups, pre_pad, pad_mode)


# (batch, C_in, C_out, size, geometry, n, bias, attentions present)
CASES = {
    "3x3 all attentions": (2, 4, 6, (7, 5), geometry(3, padding=1), 4, True, "input output spatial kernel"),
    "3x3 stride 2, two groups": (3, 4, 6, (7, 6), geometry(3, 2, 1, groups=2), 3, True, "spatial kernel"),
    "1x1 stride 2": (2, 8, 4, (5, 5), geometry(1, 2), 2, False, "input kernel"),
    "1x1, no attention but kernel": (2, 3, 5, (3, 4), geometry(1), 4, True, "kernel"),
    "5x5 depthwise": (
        2,
        2,
        2,
        (5, 6),
        geometry(5, padding=2, groups=2),
        2,
        False,
        "input output spatial kernel",
    ),
    "depthwise x2 channels": (1, 2, 4, (6, 5), geometry(3, 1, 1, groups=2), 1, True, "kernel output"),
    "dilation 2, odd padding": (
        2,
        3,
        5,
        (7, 7),
        geometry((3, 2), (1, 2), (2, 1), 2),
        3,
        True,
        "spatial kernel",
    ),
    "n=1 spatial only": (3, 3, 4, (5, 7), geometry(3, padding=1), 1, True, "spatial"),
    "two kernels, no kernel attention": (2, 4, 3, (5, 5), geometry(3, 1, 1), 2, True, "input"),
    "reflect padding": (
        2,
        3,
        4,
        (6, 5),
        geometry(3, pre_pad=(1, 1, 1, 1), pad_mode="reflect"),
        2,
        False,
        "kernel",
    ),
    "input smaller than kernel reach": (2, 2, 3, (2, 3), geometry(3, 2, 1), 2, True, "kernel spatial"),
}


def random_attentions(names: str, batch: int, c_in: int, c_out: int, kernel: tuple[int, int], n: int):
    shapes = {"input": (c_in,), "output": (c_out,), "spatial": kernel, "kernel": (n,)}
    return {name: torch.rand(batch, *shapes[name]).add_(0.2).requires_grad_() for name in names.split()}


@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_every_gradient_match_the_grouped_formulation(case):
    batch, c_in, c_out, size, geom, n, with_bias, names = CASES[case]
    x = torch.randn(batch, c_in, *size, requires_grad=True)
    weight = torch.randn(n, c_out, c_in // geom.groups, *geom.kernel_size, requires_grad=True)
    bias = torch.randn(n, c_out, requires_grad=True) if with_bias else None
    attentions = random_attentions(names, batch, c_in, c_out, geom.kernel_size, n)
    leaves = [x, weight, *([bias] if with_bias else []), *attentions.values()]

    expected = conv_grouped(x, weight, bias, attentions, geom)
    actual = CONVOLUTIONS["triton"](x, weight, bias, attentions, geom)
    torch.testing.assert_close(actual, expected, **TOLERANCE)
    upstream = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, leaves, upstream)
    actual_grads = torch.autograd.grad(actual, leaves, upstream)
    names_of_leaves = ["x", "weight", *(["bias"] if with_bias else []), *attentions]
    for name, got, want in zip(names_of_leaves, actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, **TOLERANCE, msg=lambda m, name=name: f"d{name}: {m}")


def test_batch_zero():
    geom = geometry(3, padding=1)
    x = torch.randn(0, 4, 5, 5, requires_grad=True)
    weight = torch.randn(2, 6, 4, 3, 3, requires_grad=True)
    attentions = {"kernel": torch.rand(0, 2, requires_grad=True)}
    y = CONVOLUTIONS["triton"](x, weight, None, attentions, geom)
    assert y.shape == (0, 6, 5, 5)
    y.sum().backward()
    assert torch.equal(weight.grad, torch.zeros_like(weight))
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("method", [FMDConv2d, ODConv2d])
def test_layers_match_the_per_sample_reference(method):
    layer = randomise(method(6, 4, 3, stride=2, padding=1, groups=2, kernel_num=4, bias=True))
    layer.formulation = "triton"
    x = torch.randn(3, 6, 7, 5)
    torch.testing.assert_close(layer(x), reference_forward(layer, x), **TOLERANCE)


def test_unavailable_without_cuda_or_the_interpreter(monkeypatch):
    x = torch.randn(1, 2, 3, 3)
    assert triton_available(x)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not triton_available(x)
    with pytest.raises(ValueError, match="formulation='triton' needs"):
        CONVOLUTIONS["triton"](x, torch.randn(1, 2, 2, 1, 1), None, {}, geometry(1))


def test_reflect_padding_agrees_with_f_pad():
    # The geometry's pre_pad goes through F.pad before the kernels, as in the other formulations.
    geom = geometry(3, pre_pad=(1, 1, 1, 1), pad_mode="reflect")
    x, weight = torch.randn(1, 2, 4, 4), torch.randn(1, 3, 2, 3, 3)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight[0])
    torch.testing.assert_close(CONVOLUTIONS["triton"](x, weight, None, {}, geom), expected, **TOLERANCE)


def test_compiles_without_graph_breaks():
    # The kernels are torch custom ops (forward and backward): one opaque node each for torch.compile.
    layer = randomise(ODConv2d(4, 4, 3, padding=1, kernel_num=2))
    layer.formulation = "triton"
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), layer(x), **TOLERANCE)
    (compiled_grad,) = torch.autograd.grad(compiled(x).sum(), x)
    (eager_grad,) = torch.autograd.grad(layer(x).sum(), x)
    torch.testing.assert_close(compiled_grad, eager_grad, **TOLERANCE)
