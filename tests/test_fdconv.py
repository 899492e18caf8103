"""FDConv (Chen et al., CVPR 2025): the layer against a float64 reference written from the paper's
formulas, the authors' layer and ResNet (stored outputs, ``tests/data/make_fdconv_reference.py``),
the replacement rule, conversion from static models, parameter counts of the authors' models, and
the export/compile/gradient checks the other layers pass."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fmdconv import convert, create_model
from fmdconv.cli import main
from fmdconv.compat import convert_state_dict, load_authors_checkpoint
from fmdconv.experiments.comparison import compare
from fmdconv.layers import FDConv2d, create_conv2d
from fmdconv.layers.fdconv import band_masks, frequency_order
from fmdconv.profiling.complexity import fft_macs, profile

REFERENCE = Path(__file__).parent / "data" / "fdconv_reference.pt"
FORMULATIONS = ("direct", "mixture", "dft")


def randomise(layer: nn.Module, scale: float = 0.3) -> nn.Module:
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            parameter.copy_(torch.randn_like(parameter) * (0.05 if name == "dft_weight" else scale))
        for module in layer.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    return layer


def inverse_real_dft(half: torch.Tensor, columns: int) -> torch.Tensor:
    """The real matrix whose half spectrum (R, columns // 2 + 1, complex) is ``half``, by the sum
    ``w[m, n] = 1/(R·C) Σ_u Σ_v c_v Re(X[u, v] exp(2πi(um/R + vn/C)))``, c_v = 2 but at DC/Nyquist."""
    rows = half.shape[0]
    u, m = torch.arange(rows, dtype=torch.float64), torch.arange(rows, dtype=torch.float64)
    v, n = torch.arange(half.shape[1], dtype=torch.float64), torch.arange(columns, dtype=torch.float64)
    weight = torch.full((half.shape[1],), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if columns % 2 == 0:
        weight[-1] = 1.0
    rows_phase = torch.exp(2j * math.pi * torch.outer(m, u) / rows)  # (m, u)
    cols_phase = torch.exp(2j * math.pi * torch.outer(v, n) / columns) * weight[:, None]  # (v, n)
    return (rows_phase @ half @ cols_phase).real / (rows * columns)


def reference_forward(layer: FDConv2d, x: torch.Tensor) -> torch.Tensor:
    """FDConv per sample in float64, from the paper's formulas (module docstring of fmdconv.layers.fdconv)."""
    layer = layer.double().eval()
    x = x.double()
    c_out, c_in, (kh, kw) = layer.out_channels, layer.in_channels, layer.kernel_size
    rows, columns = c_out * kh, c_in * kw
    spectrum = torch.complex(layer.dft_weight[..., 0], layer.dft_weight[..., 1]).detach()
    group = torch.empty(spectrum.numel(), dtype=torch.long)
    group[frequency_order(rows, columns)] = torch.arange(spectrum.numel()) // (
        spectrum.numel() // layer.kernel_num
    )
    group = group.view(spectrum.shape)
    alpha = max(1, min(c_in, c_out) // 2) * layer.kernel_num
    outputs = []
    for sample in x:
        pooled = sample.mean((1, 2))
        gates: dict[str, torch.Tensor] = {}
        if layer.global_modulation is not None:
            path = layer.global_modulation
            bn = path.bn
            hidden = (path.fc.weight @ pooled - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
            hidden = hidden * bn.weight + bn.bias
            hidden = path.act.scale * torch.relu(hidden) ** 2 + path.act.bias
            for head_name, head in path.heads.items():
                logits = head.weight @ hidden + head.bias
                if head_name == "kernel":
                    gates[head_name] = 2 * torch.sigmoid(logits / layer.kernel_temperature) / layer.kernel_num
                else:
                    gates[head_name] = 2 * torch.sigmoid(logits / layer.gate_temperature)
        attention = gates.get(
            "kernel", torch.full((layer.kernel_num,), 1.0 / layer.kernel_num, dtype=x.dtype)
        )
        matrix = inverse_real_dft(spectrum * alpha * attention[group], columns)
        kernel = matrix.view(c_out, kh, c_in, kw).permute(0, 2, 1, 3)
        if layer.local_modulation is not None:
            path = layer.local_modulation
            normed = F.layer_norm(pooled, (c_in,), path.norm.weight, path.norm.bias, path.norm.eps)
            width = path.conv.weight.shape[-1]
            padded = F.pad(normed, (width // 2, width // 2))
            logits = torch.stack([padded[i : i + c_in] for i in range(width)], -1) @ path.conv.weight[:, 0].T
            kernel = kernel * 2 * torch.sigmoid(logits.T.reshape(c_out, kh, kw, c_in).permute(0, 3, 1, 2))
        if "spatial" in gates:
            kernel = kernel * gates["spatial"].view(kh, kw)
        kernel = kernel * gates.get("input", torch.ones(c_in, dtype=x.dtype))[:, None, None]
        kernel = kernel * gates.get("output", torch.ones(c_out, dtype=x.dtype))[:, None, None, None]
        features = sample
        if layer.band_modulation is not None:
            height, width_ = sample.shape[-2:]
            masks = band_masks(layer.band_modulation.k_list, height, width_).double()
            previous, features = sample, 0
            for mask, gate in zip(masks, layer.band_modulation.gates, strict=True):
                low = torch.fft.irfft2(torch.fft.rfft2(sample) * mask, s=(height, width_))
                scale = 2 * torch.sigmoid(F.conv2d(sample[None], gate.weight, gate.bias, padding=1)[0])
                features = features + scale * (previous - low)
                previous = low
            features = features + previous
        y = F.conv2d(features[None], kernel, layer.bias, layer.stride, layer.padding, layer.dilation)
        outputs.append(y[0])
    return torch.stack(outputs)


CASES = [
    # (C_in, C_out, k, stride, kernel_num, parts switched off)
    (6, 4, 3, 1, 4, ()),
    (6, 8, 1, 1, 2, ()),
    (4, 6, 3, 2, 3, ("band_modulation",)),
    (6, 4, 3, 1, 4, ("global_modulation",)),
    (6, 4, 3, 1, 4, ("local_modulation", "fourier_weight")),
]


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize(("c_in", "c_out", "k", "stride", "kernel_num", "off"), CASES)
def test_every_formulation_matches_the_float64_reference(
    c_in, c_out, k, stride, kernel_num, off, formulation
) -> None:
    torch.manual_seed(0)
    switches = {part: False for part in off}
    layer = FDConv2d(c_in, c_out, k, stride, k // 2, bias=True, kernel_num=kernel_num, **switches)
    randomise(layer).double().eval()
    layer.formulation = formulation
    x = torch.randn(3, c_in, 8, 10, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference_forward(layer, x), rtol=1e-10, atol=1e-10)


def test_switched_off_parts_hold_no_parameters() -> None:
    layer = FDConv2d(
        8, 8, 3, padding=1, global_modulation=False, local_modulation=False, band_modulation=False
    )
    assert {name for name, _ in layer.named_parameters()} == {"dft_weight"}
    assert "off=" in repr(layer)
    assert FDConv2d(8, 8, 1).band_modulation is None  # FBM on 3x3 kernels only, as the authors


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_gradcheck(formulation: str) -> None:
    torch.manual_seed(1)
    layer = randomise(FDConv2d(4, 4, 3, padding=1, kernel_num=2, bias=True)).double().eval()
    layer.formulation = formulation
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))
    params = [layer.dft_weight, layer.global_modulation.heads["kernel"].weight]
    assert torch.autograd.gradcheck(
        lambda *p: torch.func.functional_call(
            layer,
            dict(zip(["dft_weight", "global_modulation.heads.kernel.weight"], p, strict=True)),
            (x.detach(),),
        ),
        tuple(p.detach().requires_grad_() for p in params),
    )


def test_batch_zero_one_and_unbatched() -> None:
    layer = FDConv2d(8, 6, 3, stride=2, padding=1, kernel_num=3)
    assert layer(torch.randn(0, 8, 9, 9)).shape == (0, 6, 5, 5)
    layer.train()
    x = torch.randn(1, 8, 9, 9)
    before = layer.global_modulation.bn.running_mean.clone()
    y = layer(x)  # batch 1 in training: the global path's BN uses its running statistics
    y.sum().backward()
    assert torch.equal(layer.global_modulation.bn.running_mean, before)
    layer.eval()
    torch.testing.assert_close(layer(x[0]), layer(x)[0])


def test_neutral_heads_give_the_static_convolution() -> None:
    torch.manual_seed(2)
    static = nn.Conv2d(12, 10, 3, stride=2, padding=1, bias=True)
    layer = create_conv2d("fd", 12, 10, 3, 2, 1, bias=True, kernel_num=3)
    layer.load_static_weight(static.weight)
    with torch.no_grad():
        layer.bias.copy_(static.bias)
    x = torch.randn(2, 12, 11, 11)
    torch.testing.assert_close(layer(x), static(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.static_weight(), static.weight.detach(), rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="groups must be 1"):
        FDConv2d(8, 8, 3, groups=2)
    with pytest.raises(ValueError, match="kernel_num must divide the 195 frequency bins"):
        FDConv2d(8, 5, 3, kernel_num=4)  # 15 x (24 // 2 + 1) bins
    with pytest.raises(ValueError, match="formulation must be one of auto, direct, mixture, dft"):
        FDConv2d(8, 8, 3, formulation="grouped")
    with pytest.raises(ValueError, match="attention_init"):
        FDConv2d(8, 8, 3, attention_init="random")
    with pytest.raises(ValueError, match="expected an input"):
        FDConv2d(8, 8, 3)(torch.randn(2, 7, 5, 5))
    with pytest.raises(ValueError, match="ResNets only"):
        create_model("mobilenet_v2", conv="fd")


# The authors' models (their layer in every replaced convolution, built with their code on CPU):
# total parameters for kernel_num 4 and 64 (their detection models use 64; published: ResNet-50
# +3.6M over the static 25,557,032).
AUTHORS_PARAMETERS = {
    ("resnet18", 4): 12_239_512,
    ("resnet18", 64): 12_258_712,
    ("resnet50", 4): 29_114_872,
    ("resnet50", 64): 29_204_152,
}


@pytest.mark.parametrize(("name", "kernel_num"), sorted(AUTHORS_PARAMETERS))
def test_parameter_counts_equal_the_authors_models(name: str, kernel_num: int) -> None:
    with torch.device("meta"):
        model = create_model(name, conv="fd", kernel_num=kernel_num)
    assert sum(p.numel() for p in model.parameters()) == AUTHORS_PARAMETERS[name, kernel_num]


def test_replacement_rule_keeps_small_and_downsample_convolutions_static() -> None:
    model = create_model("resnet18", conv="fd", width=0.25, stem="cifar", num_classes=10)
    dynamic = {name for name, m in model.named_modules() if isinstance(m, FDConv2d)}
    assert "layer1.0.conv1" not in dynamic and "layer2.0.conv1" not in dynamic  # 16 channels
    assert {"layer2.0.conv2", "layer3.0.conv1", "layer4.1.conv2"} <= dynamic  # strided ones too
    assert not any("downsample" in name for name in dynamic)


def test_convert_starts_from_the_static_model() -> None:
    torch.manual_seed(3)
    static = create_model("resnet18", conv="static", width=0.25, stem="cifar", num_classes=10).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = static(x)
    converted = convert(static, conv="fd", kernel_num=4, exclude=["*downsample*"]).eval()
    built = create_model("resnet18", conv="fd", kernel_num=4, width=0.25, stem="cifar", num_classes=10)
    assert converted.state_dict().keys() == built.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(converted(x), expected, rtol=1e-5, atol=1e-5)


def test_authors_layer_loads_strictly_both_ways_with_equal_outputs() -> None:
    reference = torch.load(REFERENCE, weights_only=True)["layer"]
    layer = FDConv2d(32, 24, 3, padding=1, bias=True, kernel_num=8)
    layer.load_state_dict(convert_state_dict(reference["state"], "fdconv"), strict=True)
    layer.eval()
    back = convert_state_dict(layer.state_dict(), "fdconv", direction="to_authors")
    assert back.keys() == reference["state"].keys()
    assert all(torch.equal(back[k], v) for k, v in reference["state"].items())
    for formulation in FORMULATIONS:
        layer.formulation = formulation
        with torch.no_grad():
            torch.testing.assert_close(layer(reference["input"]), reference["output"], rtol=1e-5, atol=1e-5)


def test_authors_resnet_checkpoint_loads_with_equal_outputs(tmp_path) -> None:
    reference = torch.load(REFERENCE, weights_only=True)["resnet18"]
    path = tmp_path / "fdconv_resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference["state"].items()}}, path)
    model = create_model("resnet18", conv="fd", kernel_num=4, width=0.25, stem="cifar", num_classes=10)
    model.load_state_dict(load_authors_checkpoint(path, "fdconv"), strict=True)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(reference["input"]), reference["output"], rtol=1e-5, atol=1e-5)
    back = convert_state_dict(model.state_dict(), "fdconv", direction="to_authors")
    assert back.keys() == reference["state"].keys()


def test_compat_errors_are_named() -> None:
    with pytest.raises(ValueError, match="no FDConv layer"):
        convert_state_dict({"weight": torch.zeros(1)}, "fdconv")
    with pytest.raises(ValueError, match="param_ratio"):
        convert_state_dict({"dft_weight": torch.zeros(2, 3, 2, 2)}, "fdconv")
    with pytest.raises(ValueError, match="does not belong"):
        convert_state_dict(
            {"dft_weight": torch.zeros(1, 3, 2, 2), "KSM_Global.extra": torch.zeros(1)}, "fdconv"
        )
    with pytest.raises(ValueError, match="do not apply"):
        convert_state_dict({"dft_weight": torch.zeros(1, 3, 2, 2)}, "fdconv", kernel_temperature=2.0)


def test_torch_compile_has_no_graph_break() -> None:
    layer = randomise(FDConv2d(4, 4, 3, padding=1, kernel_num=2)).eval()
    x = torch.randn(2, 4, 6, 6)
    explanation = torch._dynamo.explain(layer)(x)
    assert explanation.graph_break_count == 0
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(layer, fullgraph=True, backend="eager")(x), layer(x))


def test_onnx_export_at_two_batch_sizes() -> None:
    pytest.importorskip("onnxruntime")
    from onnx_check import assert_onnx_matches_at_other_batch_sizes

    torch.manual_seed(4)
    model = nn.Sequential(FDConv2d(4, 6, 3, padding=1, kernel_num=3), FDConv2d(6, 4, 1, kernel_num=2))
    randomise(model).eval()
    assert_onnx_matches_at_other_batch_sizes(model, (4, 8, 8), batches=(3, 1))


def test_profile_counts_fdconv_parts() -> None:
    with torch.device("meta"):
        model = create_model("resnet18", conv="fd", kernel_num=4, width=0.25, stem="cifar", num_classes=10)
    counts = profile(model, (3, 16, 16))
    layer = next(r for r in counts.layers if r.name == "layer2.0.conv2")  # 32 -> 32, 3x3, 8x8 map
    assert layer.type == "FDConv2d" and layer.conv == 32 * 32 * 9 * 8 * 8
    rows, columns = 96, 96
    kernel = 32 * 32 * 9
    assert (
        layer.aggregation == 2 * rows * (columns // 2 + 1) + fft_macs(rows * columns) + 4 * kernel
    )  # local, spatial, in, out
    width = model.get_submodule("layer2.0.conv2").local_modulation.conv.weight.shape[-1]
    fcs = 32 * 16 + 16 * (32 + 32 + 9 + 4)
    assert layer.attention == 32 * 64 + fcs + kernel * width + 3 * 9 * 32 * 64
    assert layer.scaling == 32 * (fft_macs(64) + 3 * (2 * 8 * 5 + fft_macs(64) + 64))
    assert counts.params == sum(p.numel() for p in model.parameters())
    assert main(["profile", "--model", "resnet18", "--conv", "static", "--conv", "fd:64", "--no-speed"]) == 0


def test_compare_accepts_fdconv(tmp_path: Path) -> None:
    from test_train import TINY

    recipe = TINY.replace(width=0.25, subset=32, test_subset=16, epochs=1)
    results = compare(recipe, tmp_path, methods=("static", "fd"), progress=False)
    assert [r.label for r in results] == ["Static", "FDConv"]
    assert results[1].params > results[0].params and results[1].macs > results[0].macs
