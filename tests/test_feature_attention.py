"""SE, CBAM and ECA: their formulas, their place in the ResNets and the papers' parameter counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from fmdconv.cli import main
from fmdconv.experiments.comparison import compare
from fmdconv.layers.feature_attention import (
    CBAM,
    ECA,
    SqueezeExcitation,
    create_feature_attention,
    eca_kernel_size,
)
from fmdconv.models import create_model
from fmdconv.profiling import profile
from fmdconv.train import load_trained_model
from test_train import TINY


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_squeeze_excitation_formula():
    torch.manual_seed(0)
    se = SqueezeExcitation(32)
    assert se.fc1.out_features == 2  # reduction 16
    x = torch.randn(2, 32, 5, 4)
    pooled = x.mean((2, 3))
    gate = torch.sigmoid(se.fc2(torch.relu(se.fc1(pooled))))
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])


def test_cbam_formula():
    torch.manual_seed(0)
    cbam = CBAM(32).eval()
    x = torch.randn(2, 32, 6, 6)
    channel = torch.sigmoid(cbam.mlp(x.mean((2, 3))) + cbam.mlp(x.amax((2, 3))))[:, :, None, None]
    refined = x * channel
    maps = torch.stack([refined.mean(1), refined.amax(1)], dim=1)
    spatial = torch.sigmoid(cbam.spatial_norm(nn.functional.conv2d(maps, cbam.spatial.weight, padding=3)))
    torch.testing.assert_close(cbam(x), refined * spatial)


def test_eca_formula_and_adaptive_kernel():
    # k = |log2(C)/2 + 1/2| made odd (ECA paper, gamma = 2, b = 1)
    assert [eca_kernel_size(c) for c in (64, 128, 256, 512, 1024, 2048)] == [3, 5, 5, 5, 5, 7]
    torch.manual_seed(0)
    eca = ECA(16, kernel_size=3)
    x = torch.randn(2, 16, 3, 3)
    pooled = x.mean((2, 3))
    w = eca.conv.weight[0, 0]
    padded = nn.functional.pad(pooled, (1, 1))
    logits = w[0] * padded[:, :-2] + w[1] * padded[:, 1:-1] + w[2] * padded[:, 2:]
    torch.testing.assert_close(eca(x), x * torch.sigmoid(logits)[:, :, None, None])
    assert ECA(2048).conv.kernel_size == (7,)


# Sources: SE-ResNet-50 28.09M (SE paper; also the CBAM paper's table), CBAM ResNet-50 28.09M and
# ResNet-18 + SE / + CBAM 11.78M (CBAM paper's ImageNet table), ResNet-50 25.56M / ResNet-18 11.69M
# (torchvision; ECA adds a handful of parameters, 80 in the ECA paper's abstract).
@pytest.mark.parametrize(
    ("name", "attention", "millions"),
    [
        ("resnet50", "se", 28.09),
        ("resnet50", "cbam", 28.09),
        ("resnet50", "eca", 25.56),
        ("resnet18", "se", 11.78),
        ("resnet18", "cbam", 11.78),
        ("resnet18", "eca", 11.69),
    ],
)
def test_published_parameter_counts(name, attention, millions):
    with torch.device("meta"):
        model = create_model(name, conv="static", attention=attention)
    assert round(_params(model) / 1e6, 2) == millions


def test_eca_resnet50_adds_one_kernel_per_block():
    with torch.device("meta"):
        plain = _params(create_model("resnet50", conv="static"))
        eca = _params(create_model("resnet50", conv="static", attention="eca"))
    # 3 blocks at 256 channels (k = 5), 4 at 512 (5), 6 at 1024 (5), 3 at 2048 (7)
    assert eca - plain == 3 * 5 + 4 * 5 + 6 * 5 + 3 * 7


def test_attention_sits_on_the_residual_branch_before_the_addition():
    model = create_model("resnet50", conv="static", attention="se", num_classes=10, width=0.25).eval()
    block = model.layer1[0]
    assert isinstance(block.attention, SqueezeExcitation) and block.attention.channels == 64
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        branch = block.relu(block.bn1(block.conv1(x)))
        branch = block.relu(block.bn2(block.conv2(branch)))
        branch = block.attention(block.bn3(block.conv3(branch)))
        torch.testing.assert_close(block(x), block.relu(branch + block.downsample(x)))
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("attention", ["se", "cbam", "eca"])
def test_composes_with_dynamic_convolutions(attention):
    model = create_model("resnet18", conv="od", kernel_num=2, attention=attention, num_classes=5, width=0.25)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    assert isinstance(model.layer4[1].attention, type(create_feature_attention(attention, 8)))


def test_profile_counts_the_attention_layers():
    with torch.device("meta"):
        plain = profile(create_model("resnet50", conv="static"), (3, 224, 224))
        se = profile(create_model("resnet50", conv="static", attention="se"), (3, 224, 224))
    # SE's two FCs per block: 2 * C * C / 16 over the 16 blocks
    channels = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert se.macs - plain.macs == sum(2 * c * (c // 16) for c in channels)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: create_model("resnet18", attention="sk"), "unknown attention 'sk'"),
        (lambda: create_model("mobilenet_v2", attention="se"), "offered on the ResNets"),
        (lambda: SqueezeExcitation(0), "channels must be a positive int"),
        (lambda: SqueezeExcitation(16, reduction=0), "reduction must be an int >= 1"),
        (lambda: ECA(16, kernel_size=4), "kernel_size must be an odd int"),
        (lambda: CBAM(16, spatial_kernel=6), "spatial_kernel must be an odd int"),
        (lambda: SqueezeExcitation(8)(torch.randn(1, 4, 2, 2)), r"expected an input \(B, 8, H, W\)"),
    ],
)
def test_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_compare_runs_dcd_and_the_feature_attentions(tmp_path):
    recipe = TINY.replace(subset=32, test_subset=16, epochs=1)
    results = compare(recipe, tmp_path, methods=["static", "dcd", "se", "eca"], progress=False)
    assert [r.label for r in results] == ["Static", "DCD", "SE", "ECA"]
    static, dcd, se, eca = results
    assert dcd.params > se.params > eca.params > static.params
    trained, _, _ = load_trained_model(Path(se.run_dir) / "last.pt")
    assert trained.layer1[0].attention is not None and isinstance(trained.layer1[0].conv1, nn.Conv2d)
    with pytest.raises(
        ValueError, match=r"methods must be distinct names among .*dcd, fd, kw, se, cbam, eca"
    ):
        compare(recipe, tmp_path, methods=["sk"])
    with pytest.raises(ValueError, match="attention must be None or one of se, cbam, eca"):
        recipe.replace(attention="sk")


def test_profile_cli_lists_dcd_and_the_feature_attentions(capsys):
    command = ["profile", "--model", "resnet18", "--no-speed", "--json"]
    assert main([*command, "--conv", "static", "--conv", "se", "--conv", "dcd"]) == 0
    static, se, dcd = json.loads(capsys.readouterr().out)
    assert [e["conv"] for e in (static, se, dcd)] == ["static", "se", "dcd"]
    assert se["kernel_num"] is None and dcd["kernel_num"] is None
    assert round(se["params"] / 1e6, 2) == 11.78 and dcd["params"] > se["params"] > static["params"]
    with pytest.raises(SystemExit):
        main([*command, "--conv", "eca:4"])
    assert "eca mixes no kernels" in capsys.readouterr().err
