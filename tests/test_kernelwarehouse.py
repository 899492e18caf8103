"""KernelWarehouse (Li & Yao, ICML 2024): the layer against the paper's formulas, the backbones'
parameter counts against the authors' code, and the authors' weights through ``compat``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fmdconv
from fmdconv.compat import convert_state_dict, load_authors_checkpoint
from fmdconv.layers import (
    KWConv2d,
    TemperatureScheduler,
    Warehouse,
    create_conv2d,
    kw_layers,
    kw_schedule,
    paper_schedules,
)
from fmdconv.layers.kernelwarehouse import KWLinear
from fmdconv.models import create_model
from fmdconv.models.kernelwarehouse import kw_settings
from kw_reference import LAYER_CASES, MODEL_CASES, TAU, seeded_state
from onnx_check import assert_onnx_matches_at_other_batch_sizes

REFERENCE = torch.load(Path(__file__).parent / "data" / "kw_reference.pt", weights_only=True)

# The parameter counts of the authors' models (OSVAI/KernelWarehouse, models/kw_resnet.py and
# models/kw_mobilenetv2.py with their configs/*.json), counted by building their code with torch.
AUTHORS_COUNTS = {
    ("resnet18", "1/4", 1.0): 4_031_768,  # their README says 4.08M
    ("resnet18", "1/2", 1.0): 7_431_044,
    ("resnet18", "1", 1.0): 11_932_148,
    ("resnet18", "2", 1.0): 23_242_127,
    ("resnet18", "4", 1.0): 45_862_085,
    ("resnet50", "1/2", 1.0): 17_638_264,
    ("resnet50", "1", 1.0): 28_052_310,
    ("resnet50", "4", 1.0): 102_015_144,
    ("mobilenet_v2", "1", 1.0): 5_168_146,
    ("mobilenet_v2", "4", 1.0): 11_379_382,
    ("mobilenet_v2", "1", 0.5): 2_854_522,
    ("mobilenet_v2", "4", 0.5): 4_648_587,
    # models/kw1d2x_mobilenetv2.py, their separate 1/2x network (their README: 2.65M and 1.47M)
    ("mobilenet_v2", "1/2", 1.0): 2_654_396,
    ("mobilenet_v2", "1/2", 0.5): 1_466_888,
}


def reference_forward(layer: KWConv2d, x: Tensor) -> Tensor:
    """The paper's formulas, one sample at a time, in float64: every cell w_j = sum_i alpha_ji e_i
    placed at its (tap, output block, input block), then a plain convolution."""
    layer = layer.double()
    cells = layer.cells.double()
    n, cell_out, cell_in = cells.shape[:3]
    kh, kw = layer.kernel_size
    out_blocks, in_blocks = layer.out_channels // cell_out, layer.in_channels // layer.groups // cell_in
    attention, tau = layer.attention, float(layer.kernel_temperature)
    bn = attention.norm1
    outputs = []
    for sample in x.double():
        hidden = attention.fc1(sample.mean((1, 2)))
        hidden = (hidden - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        logits = attention.fc2(torch.relu(hidden))
        m = layer.mixtures
        if attention.num_basis is None:
            z = logits.view(m, n + 1)
        else:
            z = logits.view(m, -1)
            local, basis, zero = z[:, : attention.num_local], z[:, attention.num_local : -1], z[:, -1:]
            others = basis @ attention.fc3.weight.T
            s = attention.start_cell
            z = torch.cat([others[:, :s], local, others[:, s:], zero], 1) + attention.basis_bias.view(
                m, n + 1
            )
        kernel = torch.zeros(
            layer.out_channels, layer.in_channels // layer.groups, kh, kw, dtype=torch.float64
        )
        for j in range(m):
            alpha = (1 - tau) * z[j] / (z[j].abs().sum() + 1e-3) + tau * layer.assignment[j].double()
            cell = (alpha[:n, None, None] * cells[:, :, :, 0, 0]).sum(0)
            tap, rest = divmod(j, out_blocks * in_blocks)
            o, i = divmod(rest, in_blocks)
            kernel[
                o * cell_out : (o + 1) * cell_out, i * cell_in : (i + 1) * cell_in, tap // kw, tap % kw
            ] = cell
        bias = None if layer.bias is None else layer.bias.double()
        outputs.append(
            F.conv2d(sample[None], kernel, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
        )
    return torch.cat(outputs)


def randomised(layer: KWConv2d, tau: float = TAU) -> KWConv2d:
    """Non-trivial attention weights, cells and BatchNorm statistics, eval mode, tau in (0, 1)."""
    layer.load_state_dict(seeded_state(layer.state_dict()))
    layer.set_temperature(kernel=tau)
    return layer.eval()


@pytest.mark.parametrize(
    "options",
    [
        {"in_channels": 8, "out_channels": 12, "kernel_size": 3, "padding": 1, "cell_num_ratio": 2.0},
        {"in_channels": 8, "out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1, "groups": 8},
        {"in_channels": 8, "out_channels": 16, "kernel_size": 1, "cell_num_ratio": 0.5, "cell_in_ratio": 0.5},
        {"in_channels": 6, "out_channels": 4, "kernel_size": (3, 1), "padding": (1, 0), "bias": True},
        {"in_channels": 8, "out_channels": 8, "kernel_size": 3, "padding": 2, "dilation": 2, "groups": 2},
    ],
)
@pytest.mark.parametrize("formulation", ["grouped", "matmul"])
def test_matches_the_papers_formulas_in_float64(options, formulation):
    layer = randomised(KWConv2d(**options, formulation=formulation))
    x = torch.randn(3, options["in_channels"], 7, 7)
    expected = reference_forward(layer, x)
    torch.testing.assert_close(layer(x.double()), expected, rtol=1e-10, atol=1e-12)


def test_shared_warehouse_with_nonlocal_basis_matches_the_formulas():
    warehouse = Warehouse.for_kernels([(8, 8, 3, 3), (16, 8, 1, 1)], cell_num_ratio=1.0)
    first = KWConv2d(8, 8, 3, padding=1, warehouse=warehouse, nonlocal_basis_ratio=0.5)
    second = KWConv2d(8, 16, 1, warehouse=warehouse, start_cell=first.end_cell, nonlocal_basis_ratio=0.5)
    assert second.end_cell == warehouse.num_cells == 9 + 2
    assert second.attention.num_basis == 16
    net = nn.ModuleDict({"warehouse": warehouse, "first": first, "second": second})
    net.load_state_dict(seeded_state(net.state_dict()))
    x = torch.randn(2, 8, 5, 5)
    for layer in (first, second):
        layer.set_temperature(kernel=0.4)
        layer.eval()
    y = second(first(x))
    torch.testing.assert_close(y.double(), reference_forward(second, reference_forward(first, x)))
    # One warehouse, registered once: counted and saved once.
    assert sum(p.numel() for p in net.parameters()) == len(
        torch.nn.utils.parameters_to_vector(net.parameters())
    )
    assert [k for k in net.state_dict() if k.endswith("cells")] == ["warehouse.cells"]


def test_gradcheck_float64():
    layer = randomised(KWConv2d(4, 4, 3, padding=1, cell_num_ratio=0.5, cell_in_ratio=0.5)).double().train()
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    cells = layer.cells
    assert torch.autograd.gradcheck(lambda x, cells: layer(x), (x, cells))


def test_batch_zero_one_and_unbatched():
    layer = KWConv2d(4, 6, 3, padding=1)
    layer.train()
    x = torch.randn(1, 4, 5, 5)
    layer(x).sum().backward()  # BatchNorm at batch 1: running statistics, no error
    assert layer.attention.norm1.num_batches_tracked == 0
    assert layer(torch.randn(0, 4, 5, 5)).shape == (0, 6, 5, 5)
    layer.eval()
    torch.testing.assert_close(layer(x[0]), layer(x)[0])


def test_drop_in_for_conv2d_and_temperature():
    conv = nn.Conv2d(16, 32, 3, 2, 1, bias=False)
    layer = create_conv2d("kw", 16, 32, 3, 2, 1)
    x = torch.randn(2, 16, 9, 9)
    assert layer(x).shape == conv(x).shape
    assert layer.available_attentions == ("cell",)
    assert layer.attentions(x)["cell"].shape == (2, 9, 9)
    # tau = 1: each mixture is its own cell, the layer is a static convolution over those cells.
    layer.set_temperature(kernel=1.0)
    static = layer.per_sample_kernel(layer.assignment[None, :, :-1])[0]
    torch.testing.assert_close(layer(x), F.conv2d(x, static, None, 2, 1))
    assert fmdconv.set_temperature(nn.Sequential(layer), kernel=0.0) == 1
    assert float(layer.kernel_temperature) == 0.0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: KWConv2d(4, 4, 3, kernel_num=4), "kernel_num"),
        (lambda: create_conv2d("kw", 4, 4, 3, kernel_num=4), "kernel_num"),
        (lambda: KWConv2d(4, 4, 3, temperature=2.0), r"in \[0, 1\]"),
        (lambda: KWConv2d(4, 4, 3, formulation="mixed"), "grouped, matmul"),
        (lambda: KWConv2d(4, 4, 3, warehouse=Warehouse(4, 3, 4)), "do not tile"),
        (
            lambda: KWConv2d(4, 4, 1, warehouse=Warehouse(4, 4, 4), cell_num_ratio=2),
            "belong to the warehouse",
        ),
        (lambda: KWConv2d(4, 4, 3, warehouse=Warehouse(4, 4, 4)), "needs cells"),
        (lambda: KWConv2d(4, 4, 3, cell_num_ratio=0), "cell_num_ratio"),
        (lambda: create_model("resnet18", conv="kw", kw_ratio=3), "kw_ratio must be one of"),
        (lambda: create_model("mobilenet_v2", conv="kw", kw_ratio=2), "kw_ratio 1/2, 1, 4"),
        (lambda: KWLinear(8, 4)(torch.randn(2, 6)), r"expected an input \(B, ..., 8\)"),
        (lambda: create_model("resnet18", conv="od", kw_ratio=1), "apply to conv='kw' only"),
    ],
)
def test_errors(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


def test_schedule_anneals_one_to_zero_per_iteration():
    model = create_model("resnet18", conv="kw", width=0.125, num_classes=3)
    gate, kernel = paper_schedules(model, iters_per_epoch=10)
    assert gate is None and kernel == kw_schedule(10, 20)
    scheduler = TemperatureScheduler(model, kernel=kernel)
    assert all(float(layer.kernel_temperature) == 1.0 for layer in kw_layers(model))
    for _ in range(100):
        scheduler.step()
    assert {float(layer.kernel_temperature) for layer in kw_layers(model)} == {0.5}
    assert kernel(200) == kernel(1000) == 0.0
    mobilenet = create_model("mobilenet_v2", conv="kw", width=0.25, num_classes=3)
    assert paper_schedules(mobilenet, 10)[1] == kw_schedule(10, 15)


@pytest.mark.parametrize(("name", "ratio", "width"), sorted(AUTHORS_COUNTS))
def test_parameter_counts_equal_the_authors_code(name, ratio, width):
    with torch.device("meta"):
        model = create_model(name, conv="kw", kw_ratio=ratio, width=width)
    assert sum(p.numel() for p in model.parameters()) == AUTHORS_COUNTS[(name, ratio, width)]


def test_resnet_layout_shares_warehouses_by_stage():
    with torch.device("meta"):
        model = create_model("resnet50", conv="kw", kw_ratio=1)
    assert model.warehouse_names == ("stage0", "stage1", "stage2", "stage3")
    assert isinstance(model.conv1, nn.Conv2d) and isinstance(model.layer1[0].conv1, nn.Conv2d)
    assert isinstance(model.layer1[0].downsample[0], nn.Conv2d)  # stride 1: static
    assert model.layer2[0].conv1.shared_warehouse is model.warehouses[0]
    assert model.layer2[0].downsample[0].shared_warehouse is model.warehouses[0]
    assert model.layer2[0].conv2.shared_warehouse is model.warehouses[1]
    # Saved once: the layers only reference their warehouse.
    assert [k for k in model.state_dict() if "cells" in k] == [f"warehouses.{i}.cells" for i in range(4)]
    with torch.device("meta"):
        mobilenet = create_model("mobilenet_v2", conv="kw", kw_ratio=4)
    assert isinstance(mobilenet.features[0][0], KWConv2d)
    assert isinstance(mobilenet.features[2].conv[1][0], KWConv2d)  # depthwise
    assert mobilenet.warehouse_names[:4] == ("stage0_conv", "stage1_dw", "stage1_pw1", "stage1_pw0")


def test_mobilenet_v2_half_follows_the_authors_separate_network():
    with torch.device("meta"):
        model = create_model("mobilenet_v2", conv="kw", kw_ratio="1/2")
    stages = [f"stage{s}_dw" for s in range(1, 6)]
    assert model.warehouse_names == (
        "stage0_conv",
        *stages,
        "stage6_pw0",
        "stage6_dw",
        "stage6_pw1",
        "classifier",
    )
    # The 1x1 convolutions of stages 1-5 stay static; stage 6's and the last one are dynamic.
    assert isinstance(model.features[14].conv[0][0], nn.Conv2d)  # stage 5 (its handover block)
    assert isinstance(model.features[14].conv[1][0], KWConv2d)  # depthwise: always dynamic
    assert isinstance(model.features[15].conv[0][0], KWConv2d)
    assert model.features[18][0].shared_warehouse is model.warehouses[8]
    classifier = model.classifier[1]
    assert isinstance(classifier, KWLinear) and classifier.conv.bias is not None
    assert classifier.conv.cells.shape[1:] == (1000, 32, 1)  # 1/40 of the 1280 features; 1-D cells
    assert classifier.conv.attention.fc1.out_features == 40  # reduction 1/32
    assert {layer.warm_epochs for layer in kw_layers(model)} == {15.0}
    # Only the 1x1 and classifier warehouses are at half the cells.
    half = {"stage6_pw0", "stage6_pw1", "classifier"}
    assert {
        w.cell_num_ratio for k, w in zip(model.warehouse_names, model.warehouses, strict=True) if k in half
    } == {0.5}
    assert {
        w.cell_num_ratio
        for k, w in zip(model.warehouse_names, model.warehouses, strict=True)
        if k not in half
    } == {1.0}
    counted = fmdconv.profile(model, (3, 32, 32))
    assert counted.params == AUTHORS_COUNTS[("mobilenet_v2", "1/2", 1.0)]
    row = next(r for r in counted.layers if r.name == "classifier.1.conv")
    assert row.conv == 1280 * 1000 and row.aggregation == 20 * 1000 * 1280  # n = 20 cells


def test_linear_layer_is_the_one_by_one_convolution_over_the_positions():
    layer = KWLinear(8, 6, cell_num_ratio=0.5, cell_in_ratio=0.25)
    randomised(layer.conv)
    layer.double()
    x = torch.randn(3, 8, dtype=torch.float64)
    expected = reference_forward(layer.conv, x[:, :, None, None])[:, :, 0, 0]
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-12)
    tokens = torch.randn(2, 5, 8, dtype=torch.float64)  # pooled over the 5 positions, as the authors'
    expected = reference_forward(layer.conv, tokens.transpose(1, 2)[..., None])[..., 0].transpose(1, 2)
    torch.testing.assert_close(layer(tokens), expected, rtol=1e-10, atol=1e-12)


def test_profile_counts_the_warehouses_once():
    model = create_model("resnet18", conv="kw", kw_ratio=4, width=0.125, num_classes=10)
    counted = fmdconv.profile(model, (3, 32, 32))
    assert counted.params == sum(p.numel() for p in model.parameters())
    layer = next(r for r in counted.layers if r.name == "layer2.0.conv2")
    conv = model.layer2[0].conv2
    n, kernel = conv.cells.shape[0], conv.out_channels * conv.in_channels * 9
    assert layer.aggregation == n * kernel and layer.scaling == 0
    assert layer.conv == kernel * 4 * 4
    fcs = conv.attention.fc1.weight.numel() + conv.attention.fc2.weight.numel()
    assert layer.attention == conv.in_channels * 4 * 4 + fcs


@pytest.mark.parametrize("index", range(len(LAYER_CASES)))
def test_authors_single_layer_loads_strictly_both_ways(index):
    case = REFERENCE["layers"][index]
    c_in, c_out, k, stride, groups, cells, planes = case["case"]
    layer = KWConv2d(
        c_in, c_out, k, stride, (k - 1) // 2, groups=groups,
        cell_num_ratio=cells, cell_in_ratio=planes, cell_out_ratio=planes,
    )  # fmt: skip
    converted = convert_state_dict(case["state"], "kernelwarehouse", kernel_temperature=TAU)
    layer.load_state_dict(converted, strict=True)
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(case["input"]), case["output"], rtol=1e-5, atol=1e-6)
    back = convert_state_dict(layer.state_dict(), "kernelwarehouse", direction="to_authors")
    assert back.keys() == case["state"].keys()
    assert convert_state_dict(case["state"], "kernelwarehouse")["kernel_temperature"] == 0.0


@pytest.mark.parametrize("index", range(len(MODEL_CASES)))
def test_authors_models_load_strictly_with_equal_outputs(index, tmp_path):
    case = REFERENCE["models"][index]
    name, ratio, width = case["case"]
    model = create_model(name, conv="kw", kw_ratio=ratio, width=width)
    assert sum(p.numel() for p in model.parameters()) == case["params"]
    authors_layout = convert_state_dict(model.state_dict(), "kernelwarehouse", direction="to_authors")
    assert {k: tuple(v.shape) for k, v in authors_layout.items()} == case["shapes"]
    path = tmp_path / "authors.pth"
    torch.save({"model": seeded_state(authors_layout)}, path)
    model.load_state_dict(
        load_authors_checkpoint(path, "kernelwarehouse", kernel_temperature=TAU), strict=True
    )
    model.eval()
    with torch.no_grad():
        y = model(case["input"])
    expected = case["output"]
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_onnx_export_at_two_batch_sizes():
    pytest.importorskip("onnxruntime")
    net = nn.Sequential(
        KWConv2d(3, 8, 3, padding=1, cell_num_ratio=2), nn.ReLU(), KWConv2d(8, 4, 1, stride=2)
    )
    for layer in net:
        if isinstance(layer, KWConv2d):
            randomised(layer)
    assert_onnx_matches_at_other_batch_sizes(net.eval(), (3, 8, 8), batches=(5, 1))


def test_torch_compile_without_graph_breaks():
    layer = randomised(KWConv2d(4, 8, 3, padding=1, cell_num_ratio=2))
    x = torch.randn(2, 4, 6, 6)
    compiled = torch.compile(layer, fullgraph=True)  # fullgraph: a graph break is an error
    torch.testing.assert_close(compiled(x), layer(x), rtol=1e-4, atol=1e-5)


def test_settings_follow_the_authors_configs():
    assert kw_settings("resnet18", "1/4").cell_plane_ratio == 0.5
    assert kw_settings("resnet50", 0.5).nonlocal_basis_ratio == 0.0625
    assert kw_settings("resnet50", 1).nonlocal_basis_ratio == 1.0
    assert kw_settings("resnet18", 4.0).cell_num_ratio == 4.0
