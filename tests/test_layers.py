"""The dynamic convolution layers against the per-sample reference formula, and their contracts."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fmdconv import (
    CONV_KINDS,
    CondConv2d,
    DyConv2d,
    DynamicConv2d,
    DynamicLinear,
    FMDConv2d,
    ODConv2d,
    SharedRouting,
    conv_type,
    create_conv2d,
    set_attentions,
    set_formulation,
    set_temperature,
)
from fmdconv.layers.formulations import (
    FORMULATIONS,
    MIXED_MAX_EXTRA_PIXELS,
    _fold_choices,
    choose_formulation,
)
from reference import randomise, reference_attentions, reference_forward

METHODS = (CondConv2d, DyConv2d, ODConv2d, FMDConv2d)
TOLERANCE = {"atol": 2e-5, "rtol": 1e-4}


def formulations_for(layer: DynamicConv2d) -> list[str]:
    names = ["auto", "grouped", "matmul"]
    if "spatial" not in layer.available_attentions:
        names.append("mixed")
    return names


def assert_matches_reference(
    layer: DynamicConv2d, x: torch.Tensor, kernel_attention: torch.Tensor | None = None
) -> None:
    expected = reference_forward(layer, x, kernel_attention)
    for formulation in formulations_for(layer):
        layer.formulation = formulation
        actual = layer(x, kernel_attention)
        assert actual.shape == expected.shape, formulation
        torch.testing.assert_close(actual, expected, **TOLERANCE, msg=lambda m, f=formulation: f"{f}: {m}")
    layer.formulation = "auto"


GRID = list(
    itertools.product(
        METHODS,
        (1, 3, 5),  # kernel size
        (1, 2),  # stride
        ("one", "two", "depthwise"),  # groups
        (1, 4),  # kernel_num
        (True, False),  # bias
    )
)


@pytest.mark.parametrize(("method", "kernel_size", "stride", "grouping", "kernel_num", "bias"), GRID)
def test_every_formulation_matches_the_reference(method, kernel_size, stride, grouping, kernel_num, bias):
    channels = 8
    groups = {"one": 1, "two": 2, "depthwise": channels}[grouping]
    out_channels = channels if grouping == "depthwise" else 6
    layer = randomise(
        method(
            channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=bias,
            kernel_num=kernel_num,
        )
    )
    assert_matches_reference(layer, torch.randn(3, channels, 9, 7))


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.one_of(st.tuples(st.integers(0, 2), st.integers(0, 2)), st.just("valid"), st.just("same")),
    padding_mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
    batch=st.integers(1, 3),
    size=st.tuples(st.integers(7, 11), st.integers(7, 11)),
)
def test_tuple_arguments_and_padding_modes_match_the_reference(
    method, kernel, stride, dilation, padding, padding_mode, batch, size
):
    if padding == "same":
        stride = (1, 1)
    layer = randomise(method(4, 6, kernel, stride, padding, dilation, padding_mode=padding_mode))
    x = torch.randn(batch, 4, *size)
    assert_matches_reference(layer, x)
    static = nn.Conv2d(4, 6, kernel, stride, padding, dilation, padding_mode=padding_mode)
    assert layer(x).shape == static(x).shape


@pytest.mark.parametrize("method", METHODS)
def test_eval_mode_and_unbatched_input(method):
    layer = randomise(method(5, 7, 3, padding=1)).eval()
    x = torch.randn(4, 5, 6, 6)
    assert_matches_reference(layer, x)
    torch.testing.assert_close(layer(x[1]), layer(x[1:2])[0], **TOLERANCE)
    assert set(layer.attentions(x[1])) == set(layer.available_attentions)


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck_float64(method):
    # A 2-wide trunk keeps the numerical Jacobian over the parameters small.
    trunk = {"min_channels": 2} if method.spec.has_trunk else {}
    layer = randomise(method(4, 4, 3, padding=1, groups=2, kernel_num=3, dtype=torch.float64, **trunk)).eval()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    for formulation in formulations_for(layer):
        layer.formulation = formulation
        assert torch.autograd.gradcheck(lambda inp: layer(inp), (x,)), formulation
        params = [p for p in layer.parameters() if p.requires_grad]
        assert torch.autograd.gradcheck(
            lambda *ps: torch.func.functional_call(
                layer, dict(zip([n for n, _ in layer.named_parameters()], ps, strict=True)), (x.detach(),)
            ),
            tuple(p.detach().clone().requires_grad_() for p in params),
        ), formulation


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("training", [True, False])
def test_attentions_follow_the_formula_at_temperatures_other_than_one(method, training):
    # sigmoid(head(relu(bn(fc(mean(x))))) / T) and softmax(z / tau), computed in reference.py from the
    # layer's parameters; T and tau far from 1 so that a dropped division shows.
    layer = randomise(method(6, 8, 3, padding=1, kernel_num=3)).train(training)
    if layer.gate is not None:  # running statistics that differ from the batch's
        layer.gate.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 6, 5, 5)
    for gate, kernel in ((3.0, 0.4), (0.5, 5.0)):
        set_temperature(layer, gate=gate, kernel=kernel)
        expected = reference_attentions(layer, x)
        actual = layer.attentions(x)
        assert actual.keys() == expected.keys() == set(layer.available_attentions)
        for name in expected:
            torch.testing.assert_close(actual[name], expected[name], msg=lambda m, n=name: f"{n}: {m}")


# Geometries on both sides of every threshold of formulations.py, for n = 4 kernels: (C_in, C_out,
# kernel, stride, groups, side), then what an FMDConv layer does there at batch 3 -- whether the
# grouped/matmul formulations fold the input and output attentions into the kernel (kernel elements
# below the map's elements) and what "auto" picks ("mixed" while 3 * output pixels <= 150; "matmul"
# for 1x1 kernels or maps with fewer pixels than C_out / groups; "grouped" otherwise) -- and at batch 1.
GRADIENT_GEOMETRIES = {
    "fold-both-grouped": ((4, 4, 3, 1, 1, 8), (True, True), "grouped", "grouped"),
    "fold-both-mixed": ((4, 4, 3, 1, 1, 7), (True, True), "mixed", "grouped"),
    "fold-input-only": ((4, 4, 3, 2, 1, 8), (True, False), "mixed", "grouped"),
    "fold-output-only": ((2, 16, 3, 1, 1, 6), (False, True), "mixed", "grouped"),
    "fold-none-matmul": ((8, 16, 3, 1, 1, 3), (False, False), "mixed", "matmul"),
    "grouped-channels": ((4, 4, 3, 1, 2, 8), (True, True), "grouped", "grouped"),
    "pointwise": ((4, 6, 1, 1, 1, 8), (True, True), "matmul", "matmul"),
}


def gradients(layer: DynamicConv2d, output: torch.Tensor, x: torch.Tensor, probe: torch.Tensor) -> dict:
    """d(sum(output * probe)) with respect to the input and every parameter, by name."""
    names, parameters = zip(*layer.named_parameters(), strict=True)
    grads = torch.autograd.grad((output * probe).sum(), (x, *parameters))
    return dict(zip(("input", *names), grads, strict=True))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("geometry", GRADIENT_GEOMETRIES)
def test_every_formulation_has_the_references_gradients_in_training(method, geometry):
    # Training mode: the gate trunk's BatchNorm uses batch statistics (running ones at batch 1),
    # so its parameters' gradients flow through the batch mean and variance.
    (c_in, c_out, k, stride, groups, side), folds, auto_batched, auto_single = GRADIENT_GEOMETRIES[geometry]
    # A kernel MLP of a few channels has 1-2 hidden units, all of which a ReLU may silence: widen it.
    wide = {"hidden_extra": 8} if method.spec.kernel_source == "mlp" else {}
    layer = randomise(
        method(c_in, c_out, k, stride, k // 2, groups=groups, kernel_num=4, dtype=torch.float64, **wide)
    ).train()
    fmd = FMDConv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, kernel_num=4)
    x = torch.randn(3, c_in, side, side)
    assert _fold_choices(fmd.attentions(x), fmd.weight, x, fmd._geometry, True) == folds
    assert (choice(fmd, (3, c_in, side, side)), choice(fmd, (1, c_in, side, side))) == (
        auto_batched,
        auto_single,
    )
    assert 3 * 7 * 7 <= MIXED_MAX_EXTRA_PIXELS < 3 * 8 * 8  # the sides 7 and 8 straddle the mixed rule
    for batch in (3, 1):
        # Per-sample channel offsets, so that pooled inputs, and so the attentions, vary widely.
        x = torch.randn(batch, c_in, side, side, dtype=torch.float64) + torch.randn(batch, c_in, 1, 1)
        x.requires_grad_()
        expected_output = reference_forward(layer, x)
        probe = torch.randn_like(expected_output)
        expected = gradients(layer, expected_output, x, probe)
        assert [name for name, g in expected.items() if not g.abs().max() > 0] == []  # all exercised
        for fold, formulation in itertools.product((True, False), formulations_for(layer)):
            layer.fold_attentions, layer.formulation = fold, formulation
            actual = gradients(layer, layer(x), x, probe)
            for name, grad in expected.items():
                torch.testing.assert_close(
                    actual[name],
                    grad,
                    rtol=1e-7,
                    atol=1e-10,
                    msg=lambda m, c=(batch, fold, formulation, name): f"batch, fold, formulation, {c}: {m}",
                )


def test_attention_shapes_and_heads_per_method():
    x = torch.randn(2, 32, 8, 8)
    expected = {
        CondConv2d: {"kernel": (2, 4)},
        DyConv2d: {"kernel": (2, 4)},
        ODConv2d: {"input": (2, 32), "output": (2, 64), "spatial": (2, 3, 3), "kernel": (2, 4)},
        FMDConv2d: {"input": (2, 32), "output": (2, 64), "kernel": (2, 4)},
    }
    for method, shapes in expected.items():
        attentions = method(32, 64, 3, padding=1).attentions(x)
        assert {k: tuple(v.shape) for k, v in attentions.items()} == shapes
    softmax = DyConv2d(32, 64, 3).attentions(x)["kernel"]
    torch.testing.assert_close(softmax.sum(1), torch.ones(2))


def test_skipped_heads_create_no_parameters():
    depthwise = ODConv2d(16, 16, 3, groups=16, kernel_num=4)
    assert set(depthwise.gate.heads) == {"input", "spatial", "kernel"}
    pointwise = ODConv2d(16, 32, 1, kernel_num=4)
    assert set(pointwise.gate.heads) == {"input", "output", "kernel"}
    single = ODConv2d(16, 32, 3, kernel_num=1)
    assert set(single.gate.heads) == {"input", "output", "spatial"}
    # As the authors' code: FMDConv and DyConv keep their kernel MLP at n = 1 (its softmax is 1).
    assert FMDConv2d(16, 32, 3, kernel_num=1).kernel_path is not None
    assert DyConv2d(16, 32, 3, kernel_num=1).kernel_path is not None
    assert CondConv2d(16, 32, 3, kernel_num=1).kernel_path is not None  # sigmoid routing still scales


def test_widths_and_defaults_follow_the_papers():
    layer = FMDConv2d(512, 512, 3)
    assert layer.gate.fc.out_features == 32  # max(int(512 / 16), 16)
    assert layer.kernel_path.fc1.out_features == 129  # int(512 * 0.25) + 1
    assert FMDConv2d(64, 64, 3).gate.fc.out_features == 16  # the floor
    assert DyConv2d(3, 64, 3, kernel_num=4).kernel_path.fc1.out_features == 4  # C_in == 3: h = n
    assert DyConv2d(64, 64, 3, hidden_extra=0).kernel_path.fc1.out_features == 16  # the ODConv paper's DyConv
    assert ODConv2d(64, 64, 3, reduction=0.25).gate.fc.out_features == 16
    assert ODConv2d(64, 64, 3).bias is None
    assert FMDConv2d(64, 64, 3).bias.shape == (4, 64)
    assert DyConv2d(64, 64, 3).bias.shape == (4, 64)
    assert FMDConv2d(64, 64, 3, bias=False).bias is None
    fmd = FMDConv2d(64, 64, 3)
    assert (fmd.gate_temperature.item(), fmd.kernel_temperature.item()) == (30.0, 34.0)
    assert not hasattr(CondConv2d(8, 8, 3), "kernel_temperature")
    assert fmd.weight.shape == (4, 64, 64, 3, 3)
    assert (fmd.stride, fmd.padding, fmd.dilation, fmd.groups) == ((1, 1), (0, 0), (1, 1), 1)


def test_initialisation_follows_the_authors_code():
    layer = ODConv2d(64, 128, 3, kernel_num=4)
    expected_std = (2.0 / (128 * 9)) ** 0.5
    assert abs(layer.weight.std().item() - expected_std) / expected_std < 0.05
    assert all((head.bias == 0).all() for head in layer.gate.heads.values())
    assert (layer.gate.bn.weight == 1).all() and (layer.gate.bn.bias == 0).all()
    before = layer.weight.detach().clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.weight)


def test_training_at_batch_size_one_uses_running_statistics():
    layer = ODConv2d(8, 8, 3, padding=1).train()
    running_mean = layer.gate.bn.running_mean.clone()
    y = layer(torch.randn(1, 8, 5, 5))
    y.sum().backward()
    assert torch.isfinite(layer.weight.grad).all()
    assert torch.equal(layer.gate.bn.running_mean, running_mean)
    layer(torch.randn(2, 8, 5, 5))
    assert not torch.equal(layer.gate.bn.running_mean, running_mean)


def test_state_dict_round_trip_keeps_temperatures():
    model = nn.Sequential(FMDConv2d(4, 8, 3), ODConv2d(8, 8, 3), DyConv2d(8, 8, 3), CondConv2d(8, 8, 3))
    assert set_temperature(model, gate=7.5, kernel=12.0) == 4
    set_temperature(model, kernel=3.0)
    restored = nn.Sequential(FMDConv2d(4, 8, 3), ODConv2d(8, 8, 3), DyConv2d(8, 8, 3), CondConv2d(8, 8, 3))
    restored.load_state_dict(model.state_dict())
    assert restored[0].gate_temperature.item() == 7.5
    assert restored[0].kernel_temperature.item() == 3.0
    assert restored[1].gate_temperature.item() == 7.5
    assert restored[2].kernel_temperature.item() == 3.0
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(restored.eval()(x), model.eval()(x))


def test_ablation_switches_count_as_one():
    layer = randomise(FMDConv2d(6, 6, 3, padding=1))
    x = torch.randn(2, 6, 7, 7)
    set_attentions(layer, input=False, kernel=False)
    assert set(layer.attentions(x)) == {"output"}
    assert_matches_reference(layer, x)
    set_attentions(layer, input=True, kernel=True)
    assert set(layer.attentions(x)) == {"input", "output", "kernel"}
    with pytest.raises(ValueError, match="accepted"):
        set_attentions(layer, channel=False)


@pytest.mark.parametrize("method", METHODS)
def test_attentions_on_the_feature_maps_match_the_reference(method):
    layer = randomise(method(6, 8, 3, stride=2, padding=1, groups=2, kernel_num=3))
    layer.fold_attentions = False
    assert_matches_reference(layer, torch.randn(3, 6, 9, 9))
    assert_matches_reference(layer, torch.randn(1, 6, 9, 9))


@pytest.mark.parametrize("method", METHODS)
def test_channels_last_input_matches_the_reference(method):
    layer = randomise(method(8, 8, 3, padding=1, kernel_num=4))
    x = torch.randn(4, 8, 6, 6).to(memory_format=torch.channels_last)
    assert_matches_reference(layer, x)
    assert_matches_reference(layer, x[:1])


@pytest.mark.parametrize(
    ("method", "kernel_size", "groups", "batch"),
    [
        *((method, 3, 1, 4) for method in METHODS),
        (FMDConv2d, 5, 2, 1),
        (ODConv2d, 5, 2, 3),
    ],
)
def test_module_to_channels_last_keeps_the_kernel_layout(method, kernel_size, groups, batch):
    layer = randomise(method(8, 8, kernel_size, padding=kernel_size // 2, groups=groups, kernel_num=4))
    x = torch.randn(batch, 8, 6, 6)
    shape = layer.weight.shape
    expected = layer(x)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.to(memory_format=torch.channels_last)  # nn.Module.to cannot make a 5-D tensor channels_last
    assert layer.weight.shape == shape and layer.weight[0].is_contiguous(memory_format=torch.channels_last)
    assert_matches_reference(layer, x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(layer(x), expected, **TOLERANCE)
    layer.to(memory_format=torch.channels_last_3d)  # a format 5-D tensors take is applied as torch does
    torch.testing.assert_close(layer(x), expected, **TOLERANCE)
    layer.load_state_dict(state)
    layer.double()
    assert layer.weight.dtype == torch.float64 and layer.weight.shape == shape


def test_shared_routing_takes_the_blocks_kernel_attention():
    layer = randomise(CondConv2d(6, 8, 3, padding=1, groups=2, kernel_num=3, shared_routing=True))
    assert layer.kernel_path is None and "kernel" in layer.available_attentions
    assert "shared_routing=True" in repr(layer)
    routing = torch.rand(4, 3)
    x = torch.randn(4, 6, 7, 7)
    assert_matches_reference(layer, x, routing)
    torch.testing.assert_close(layer.attentions(x, routing)["kernel"], routing)
    torch.testing.assert_close(layer(x[0], routing[0]), layer(x, routing)[0], **TOLERANCE)
    with pytest.raises(ValueError, match=r"shape \(batch, kernel_num\) = \(4, 3\), got None"):
        layer(x)
    with pytest.raises(ValueError, match=r"\(4, 3\), got \(4, 2\)"):
        layer(x, routing[:, :2])
    with pytest.raises(ValueError, match=r"\(kernel_num,\) for an unbatched input = \(3,\), got \(1, 3\)"):
        layer(x[0], routing[:1])
    with pytest.raises(ValueError, match="kernel_attention is only for layers built with shared_routing"):
        CondConv2d(6, 8, 3, kernel_num=3)(x, routing)


@pytest.mark.parametrize("method", [DyConv2d, ODConv2d, FMDConv2d])
def test_shared_routing_is_condconvs_only(method):
    with pytest.raises(ValueError, match="shared_routing is for CondConv's sigmoid routing"):
        method(6, 8, 3, kernel_num=3, shared_routing=True)
    with pytest.raises(ValueError, match="shared_routing must be True or False"):
        CondConv2d(6, 8, 3, shared_routing="yes")


def test_shared_routing_module_and_parameter_savings():
    routing = SharedRouting(6, 3)
    x = torch.randn(2, 6, 5, 5)
    torch.testing.assert_close(routing(x), torch.sigmoid(routing.fc(x.mean((2, 3)))))
    torch.testing.assert_close(routing(x.mean((2, 3))), routing(x))
    own, shared = CondConv2d(6, 8, 3, kernel_num=3), CondConv2d(6, 8, 3, kernel_num=3, shared_routing=True)
    assert sum(p.numel() for p in own.parameters()) - sum(p.numel() for p in shared.parameters()) == 6 * 3 + 3
    with pytest.raises(ValueError, match=r"expected a block input \(B, 6, H, W\) or pooled \(B, 6\), got"):
        routing(x[0])


@pytest.mark.parametrize("kind", ["cond", "fmd"])
def test_dynamic_linear_is_a_per_sample_mix_of_linear_layers(kind):
    layer = DynamicLinear(6, 5, kind=kind, kernel_num=3)
    randomise(layer.conv)
    x = torch.randn(4, 6)
    attentions = layer.conv.attentions(x[:, :, None, None])
    kernel = attentions["kernel"]
    weight = torch.einsum("bn,noi->boi", kernel, layer.weight[..., 0, 0])
    expected = torch.einsum("boi,bi->bo", weight, x * attentions.get("input", 1.0)) + kernel @ layer.bias
    expected = expected * attentions.get("output", 1.0)
    torch.testing.assert_close(layer(x), expected, **TOLERANCE)
    layer.eval()
    torch.testing.assert_close(layer(x[1]), layer(x)[1], **TOLERANCE)
    assert layer.weight.shape == (3, 5, 6, 1, 1) and layer.bias.shape == (3, 5)
    with pytest.raises(ValueError, match=r"expected an input of shape \(B, 6\) or \(6,\), got \(4, 6, 1\)"):
        layer(x[..., None])
    with pytest.raises(ValueError, match=r"expected an input of shape \(B, 6\) or \(6,\), got \(4, 7\)"):
        layer(torch.randn(4, 7))
    with pytest.raises(ValueError, match="kind must be a dynamic method"):
        DynamicLinear(6, 5, kind="static")
    with pytest.raises(ValueError, match="in_features must be a positive int, got 0"):
        DynamicLinear(0, 5)


def choice(layer: DynamicConv2d, shape: tuple[int, ...]) -> str:
    x = torch.randn(*shape)
    attentions = layer.attentions(x)
    return choose_formulation(attentions, layer.kernel_num, layer._geometry, x.shape, layer.out_channels)


def test_the_rule_picks_the_dedicated_paths():
    deep = FMDConv2d(64, 64, 3, padding=1, kernel_num=4)
    assert choice(deep, (8, 64, 4, 4)) == "mixed"  # small map: n convolutions are cheap
    assert choice(deep, (1, 64, 4, 4)) == "matmul"  # batch 1: one kernel to build
    assert choice(deep, (8, 64, 32, 32)) == "grouped"  # large map: the per-sample kernel is cheap
    assert choice(FMDConv2d(64, 64, 3, padding=1, kernel_num=1), (1, 64, 32, 32)) == "mixed"  # static conv
    assert choice(CondConv2d(64, 64, 3, padding=1, kernel_num=1), (8, 64, 32, 32)) == "mixed"
    assert choice(FMDConv2d(64, 64, 1, kernel_num=4), (8, 64, 32, 32)) == "matmul"  # 1x1: a plain bmm
    spatial = ODConv2d(64, 64, 3, padding=1, kernel_num=4)
    assert choice(spatial, (8, 64, 4, 4)) == "matmul"  # never mixed with spatial attention
    assert choice(spatial, (8, 64, 32, 32)) == "grouped"
    set_attentions(deep, kernel=False)
    assert choice(deep, (1, 64, 32, 32)) == "mixed"  # no kernel attention: one kernel for all samples


class OutputSizes(TorchDispatchMode):
    """The number of elements of every tensor each dispatched op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.sizes.append((func.overloadpacket.__name__, t.numel()))
        return out


VIEWS = {
    "view",
    "_unsafe_view",
    "reshape",
    "permute",
    "t",
    "transpose",
    "expand",
    "unsqueeze",
    "slice",
    "alias",
    "select",
}


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


@pytest.mark.parametrize("cls", [FMDConv2d, ODConv2d])
@pytest.mark.parametrize("formulation", ["grouped", "matmul"])
@pytest.mark.parametrize(("channels", "side"), [(32, 4), (8, 16)], ids=["deep", "early"])
def test_inference_mixes_each_kernel_once_without_larger_temporaries(
    cls, formulation, channels, side, threads
):
    # Batch 1, no autograd: one op makes a kernel-sized tensor, the mix of the n kernels (on one
    # thread their product; on more, the first kernel times its weight, the other n - 1 added to it
    # in place); the spatial attention, and the channel attentions where they are folded into the
    # kernel (the early layer, whose kernel is smaller than its map), scale it in place.
    layer = randomise(cls(channels, channels, 3, padding=1, kernel_num=4)).eval()
    layer.formulation = formulation
    x = torch.randn(1, channels, side, side)
    expected = reference_forward(layer, x)
    with torch.no_grad(), OutputSizes() as recorded:
        actual = layer(x)
    torch.testing.assert_close(actual, expected, **TOLERANCE)
    kernel = layer.weight[0].numel()
    allocated = [
        (name, size) for name, size in recorded.sizes if name not in VIEWS and not name.endswith("_")
    ]
    assert [name for name, size in allocated if size == kernel] == ["mm" if threads == 1 else "mul"]
    assert [name for name, size in recorded.sizes if size == kernel].count("addcmul_") == 3 * (threads > 1)
    if channels == 32:
        assert max(size for _, size in allocated) == kernel


def test_set_formulation():
    model = nn.Sequential(FMDConv2d(4, 4, 3), ODConv2d(4, 4, 3))
    assert set_formulation(model, "matmul") == 2
    assert model[0].formulation == model[1].formulation == "matmul"
    with pytest.raises(ValueError, match="not exact for ODConv2d"):
        set_formulation(model, "mixed")
    with pytest.raises(ValueError, match="formulation must be one of"):
        set_formulation(model, "fast")


def test_create_conv2d_builds_every_kind():
    for kind in CONV_KINDS:
        options = {"kernel_num": 2} if issubclass(conv_type(kind), DynamicConv2d) else {}
        layer = create_conv2d(kind, 8, 16, 3, stride=2, padding=1, **options)
        assert layer(torch.randn(2, 8, 9, 9)).shape == (2, 16, 5, 5)
    assert isinstance(create_conv2d("static", 8, 16, 3), nn.Conv2d)
    assert isinstance(create_conv2d("fmd", 8, 16, 3), FMDConv2d)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: FMDConv2d(8, 8, 3, kernel_num=0), "kernel_num must be an int >= 1"),
        (lambda: FMDConv2d(8, 6, 3, groups=4), "groups=4 must divide in_channels=8 and out_channels=6"),
        (lambda: ODConv2d(8, 8, 3, reduction=0.0), r"reduction must be a number in \(0, 1\]"),
        (lambda: ODConv2d(8, 8, 3, reduction=1.5), r"reduction must be a number in \(0, 1\]"),
        (lambda: ODConv2d(8, 8, 3, reduction=True), r"reduction must be a number in \(0, 1\], got True"),
        (lambda: DyConv2d(8, 8, 3, hidden_ratio=True), "hidden_ratio must be a number"),
        (lambda: ODConv2d(8, 8, 3, min_channels=True), "min_channels must be an int >= 1, got True"),
        (lambda: DyConv2d(8, 8, 3, reduction=0.5), "DyConv2d has no use for reduction"),
        (lambda: ODConv2d(8, 8, 3, hidden_extra=0), "ODConv2d has no use for hidden_extra"),
        (lambda: DyConv2d(8, 8, 3, hidden_extra=-1), "hidden_extra must be an int >= 0"),
        (lambda: CondConv2d(8, 8, 3, kernel_temperature=2.0), "CondConv2d has no use for kernel_temperature"),
        (lambda: FMDConv2d(8, 8, 3, gate_temperature=0.0), "gate_temperature must be a number > 0"),
        (lambda: FMDConv2d(8, 8, 3, kernel_temperature=True), "kernel_temperature must be a number > 0"),
        (lambda: FMDConv2d(8, 8, 3, padding="full"), "padding must be an int, a pair of ints, 'same' or"),
        (lambda: FMDConv2d(8, 8, 3, stride=2, padding="same"), "padding='same' is not supported"),
        (lambda: FMDConv2d(8, 8, 3, padding_mode="mirror"), "padding_mode must be one of"),
        (lambda: FMDConv2d(8, 8, (3, 3, 3)), "kernel_size must be an int or a pair of ints"),
        (lambda: create_conv2d("dynamic", 8, 8, 3), "unknown conv kind 'dynamic'; accepted: static, cond"),
        (lambda: create_conv2d("static", 8, 8, 3, kernel_num=4), "static convolution takes no dynamic"),
    ],
)
def test_bad_arguments_raise_clear_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_inputs_name_expected_and_received():
    layer = FMDConv2d(8, 8, 3)
    with pytest.raises(ValueError, match="in_channels=8 channels, got 3"):
        layer(torch.randn(2, 3, 9, 9))
    with pytest.raises(ValueError, match=r"expected a 4-D input .* got shape \(2, 8, 9, 9, 1\)"):
        layer(torch.randn(2, 8, 9, 9, 1))
    with pytest.raises(ValueError, match="expected a 4-D input"):
        layer(torch.randn(8, 9))


@pytest.mark.parametrize("cls", METHODS)
def test_a_wrong_input_dtype_names_the_layers_dtype(cls):
    layer = cls(8, 8, 3)
    # The dtype the layer expects, not PyTorch's "mat1 and mat2 must have the same dtype" from inside.
    with pytest.raises(
        TypeError, match=rf"^{cls.__name__}: expected a torch\.float32 input .* got torch\.int64"
    ):
        layer(torch.ones(2, 8, 9, 9, dtype=torch.long))
    with pytest.raises(TypeError, match=r"expected a torch\.float32 input .* got torch\.float64; convert"):
        layer(torch.randn(2, 8, 9, 9, dtype=torch.float64))
    assert layer.double()(torch.randn(2, 8, 9, 9, dtype=torch.float64)).dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast computes in its own dtype: accepted
        assert layer.float()(torch.randn(2, 8, 9, 9, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("cls", METHODS)
def test_an_unknown_keyword_names_the_layer(cls):
    with pytest.raises(
        TypeError, match=rf"^{cls.__name__}\.__init__\(\) got an unexpected keyword argument 'kernels'"
    ):
        cls(8, 8, 3, kernels=4)


@pytest.mark.parametrize("cls", METHODS)
def test_an_empty_batch_gives_an_empty_output_in_every_formulation(cls):
    layer = cls(8, 16, 3, stride=2, padding=1, kernel_num=2)
    expected = nn.Conv2d(8, 16, 3, stride=2, padding=1)(torch.randn(0, 8, 7, 7)).shape
    for training in (True, False):
        layer.train(training)
        for formulation in [*formulations_for(layer), "triton"]:
            layer.formulation = formulation
            assert layer(torch.randn(0, 8, 7, 7)).shape == expected == (0, 16, 4, 4), formulation


@pytest.mark.parametrize("cls", METHODS)
def test_a_map_smaller_than_the_kernel_is_named_in_every_formulation(cls):
    layer = cls(8, 8, 3, padding=1, dilation=3, kernel_num=2)  # 7x7 extent, 2 padded: at least 5x5
    for formulation in [*formulations_for(layer), "triton"]:
        layer.formulation = formulation
        with pytest.raises(ValueError, match=rf"{cls.__name__}: .* at least 5x5 \(H x W\), got 4x6"):
            layer(torch.randn(2, 8, 4, 6))
        assert layer(torch.randn(2, 8, 5, 5)).shape == (2, 8, 1, 1)


def test_formulation_is_checked_on_assignment():
    layer = FMDConv2d(8, 8, 3)
    with pytest.raises(
        ValueError, match=rf"FMDConv2d\.formulation must be one of {', '.join(FORMULATIONS)}; got 'bogus'"
    ):
        layer.formulation = "bogus"
    with pytest.raises(ValueError, match="not exact for ODConv2d"):
        ODConv2d(8, 8, 3).formulation = "mixed"
    assert layer.formulation == "auto"
    model = nn.Sequential(FMDConv2d(8, 8, 3), ODConv2d(8, 8, 3))
    with pytest.raises(ValueError, match="not exact for ODConv2d"):
        set_formulation(model, "mixed")
    assert [m.formulation for m in model] == ["auto", "auto"]  # no layer left half-switched


@pytest.mark.parametrize("formulation", ["grouped", "mixed"])
def test_bf16_weight_gradient_of_padding_taps_is_zero_on_cpu(formulation):
    # A 1x1 map, 3x3 kernel, stride 2, padding 1: only the centre tap meets the input, so every
    # other tap's weight gradient is exactly 0. oneDNN's bf16 backward-weights kernel read the
    # left/right padding taps from uninitialised memory here (formulations._conv2d): without the
    # workaround about half the rounds of ``grouped`` and nearly all of ``mixed`` go wrong, often NaN.
    layer = FMDConv2d(32, 64, 3, stride=2, padding=1)
    layer.formulation = formulation
    x = torch.randn(4, 32, 1, 1)
    for _ in range(10):
        layer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            layer(x).float().square().sum().backward()
        taps = layer.weight.grad.flatten(-2)
        assert taps[..., 4].abs().sum() > 0
        assert torch.equal(taps[..., [0, 1, 2, 3, 5, 6, 7, 8]], torch.zeros_like(taps[..., :8]))
