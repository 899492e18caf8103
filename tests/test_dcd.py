"""DCD (Li et al., ICLR 2021): the layer against a per-sample kernel reference, gradients, export,
the backbones' layout and the seed table's parameter counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmdconv import DCDConv2d, DynamicLinear, create_conv2d
from fmdconv.layers.dcd import dcd_mobilenet_v2_latent
from fmdconv.models import create_model
from fmdconv.profiling import profile
from onnx_check import assert_onnx_matches_at_other_batch_sizes


def _norm_affine(norm: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as ``a * v + b``."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return scale, norm.bias - norm.running_mean * scale


def reference_forward(layer: DCDConv2d, x: Tensor) -> Tensor:
    """Build W(x) = Λ W0 + P (diag(a2) Φ + I) diag(a1) Qᵀ (at the centre tap) and the per-sample bias,
    then convolve each sample with nn.Conv2d's own padding."""
    attentions = layer.attentions(x)
    a1, b1 = _norm_affine(layer.latent_norm)
    a2, b2 = _norm_affine(layer.mix_norm)
    static = nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        bias=False,
        padding_mode=layer.padding_mode,
        dtype=x.dtype,
    )
    kh, kw = layer.kernel_size
    identity = torch.eye(layer.latent_dim, dtype=x.dtype)
    outputs = []
    for b in range(x.shape[0]):
        scale, phi = attentions["scale"][b], attentions["phi"][b]
        low_rank = layer.latent_out @ (a2[:, None] * phi + identity) @ (a1[:, None] * layer.latent_in)
        weight = scale[:, None, None, None] * layer.weight
        weight = weight.clone()
        weight[:, :, (kh - 1) // 2, (kw - 1) // 2] += low_rank
        bias = layer.latent_out @ (a2 * (phi @ b1) + b2 + b1)
        if layer.bias is not None:
            bias = bias + scale * layer.bias
        outputs.append(static._conv_forward(x[b : b + 1], weight, bias))
    return torch.cat(outputs)


def _randomise_norms(layer: DCDConv2d) -> None:
    for norm in (layer.latent_norm, layer.mix_norm):
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        nn.init.uniform_(norm.weight, 0.5, 1.5)
        nn.init.uniform_(norm.bias, -0.5, 0.5)
    for linear in (layer.attention.fc, layer.attention.gate, layer.attention.phi, layer.attention.scale):
        nn.init.normal_(linear.weight, 0.0, 0.5)
    nn.init.normal_(layer.latent_out, 0.0, 0.5)  # "zero" init starts P at 0


LAYER_CASES = [
    {"kernel_size": 3, "padding": 1},
    {"kernel_size": 3, "stride": 2, "padding": 1, "bias": True, "pool_size": 2},
    {"kernel_size": 1, "latent_dim": 3, "squeeze_channels": 5},
    {"kernel_size": (3, 5), "padding": (2, 1), "dilation": (2, 1)},
    {"kernel_size": 3, "padding": 2, "padding_mode": "reflect", "stride": 2},
    {"kernel_size": 4, "padding": "same"},
    {"kernel_size": 3, "padding": 0},
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("options", LAYER_CASES)
def test_matches_per_sample_kernel(options):
    torch.manual_seed(0)
    layer = DCDConv2d(6, 10, **options).double().eval()
    with torch.no_grad():
        _randomise_norms(layer)
    x = torch.randn(3, 6, 9, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference_forward(layer, x))
        torch.testing.assert_close(layer(x[1]), layer(x)[1])


def test_gradcheck_float64():
    torch.manual_seed(0)
    layer = DCDConv2d(4, 5, 3, stride=2, padding=1, bias=True, pool_size=2).double().eval()
    with torch.no_grad():
        _randomise_norms(layer)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    weights = (layer.weight, layer.latent_in, layer.latent_out, layer.attention.phi.weight)
    assert torch.autograd.gradcheck(lambda x, *w: layer(x), (x, *weights))


def test_drop_in_for_conv2d_and_attentions():
    layer = create_conv2d("dcd", 16, 32, 3, stride=2, padding=1)
    assert isinstance(layer, DCDConv2d)
    assert layer.weight.shape == nn.Conv2d(16, 32, 3).weight.shape
    assert layer.bias is None  # the DCD code's convolutions have none
    assert layer.latent_dim == 4 and layer.squeeze_channels == 4  # int(sqrt(16)); max(16, 16) // 16 -> 4
    x = torch.randn(2, 16, 10, 10)
    assert layer(x).shape == nn.Conv2d(16, 32, 3, 2, 1)(x).shape
    attentions = layer.attentions(x)
    assert set(attentions) == set(layer.available_attentions) == {"scale", "phi"}
    assert attentions["scale"].shape == (2, 32) and attentions["phi"].shape == (2, 4, 4)
    assert ((attentions["scale"] >= 0) & (attentions["scale"] <= 2)).all()
    assert layer.attentions(x[0])["phi"].shape == (4, 4)
    layer.weight.data.zero_()
    layer.reset_parameters()
    assert layer.weight.abs().sum() > 0


def test_train_mode_normalises_the_latent_path_with_batch_statistics():
    torch.manual_seed(0)
    layer = DCDConv2d(4, 6, 1)
    x = torch.randn(8, 4, 5, 5) * 3 + 2
    layer(x)
    assert not torch.allclose(layer.latent_norm.running_mean, torch.zeros(layer.latent_dim))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: DCDConv2d(8, 8, 3, groups=8), "groups must be 1"),
        (lambda: DCDConv2d(8, 8, 3, latent_dim=0), "latent_dim must be an int >= 1"),
        (lambda: DCDConv2d(8, 8, 3, pool_size=0), "pool_size must be an int >= 1"),
        (lambda: DCDConv2d(8, 8, 3, fc_squeeze=0), "fc_squeeze must be an int >= 1"),
        (lambda: DCDConv2d(8, 8, 3, fc_squeeze=4, squeeze_channels=4), "not both"),
        (lambda: DCDConv2d(0, 8, 3), "in_channels must be an int >= 1"),
        (lambda: DCDConv2d(8, 8, 3, padding_mode="wrap"), "padding_mode must be one of"),
        (lambda: DCDConv2d(8, 8, 3, padding="full"), "padding must be"),
        (lambda: create_conv2d("dcd", 8, 8, 3, kernel_num=4), "kernel_num does not apply"),
        (lambda: DCDConv2d(8, 8, 3)(torch.randn(1, 4, 5, 5)), r"expected an input \(B, 8, H, W\)"),
        (lambda: DCDConv2d(8, 8, 3, attention_init="kaiming"), "attention_init must be one of"),
        (lambda: DCDConv2d(8, 8, 3, padding=1)(torch.randn(1, 8, 0, 5)), "input map is too small"),
        (lambda: DCDConv2d(8, 8, 3)(torch.randn(1, 8, 2, 5)), "at least 3x3"),
    ],
)
def test_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    "run",
    [
        lambda: DCDConv2d(4, 4, 3)(torch.ones(1, 4, 5, 5, dtype=torch.int64)),
        lambda: DCDConv2d(4, 4, 3)(torch.ones(1, 4, 5, 5, dtype=torch.float64)),
        lambda: DynamicLinear(4, 3, kind="dcd")(torch.ones(2, 4, dtype=torch.float64)),
        lambda: DynamicLinear(4, 3, kind="cond")(torch.ones(2, 4, dtype=torch.int32)),
    ],
)
def test_wrong_input_dtype_names_the_expected_one(run):
    with pytest.raises(TypeError, match=r"expected a torch\.float32 input"):
        run()


def test_zero_init_starts_as_the_static_convolution_and_authors_keeps_the_residual():
    x = torch.randn(2, 4, 7, 7)
    layer = DCDConv2d(4, 6, 3, padding=1).eval()
    assert layer.attention_init == "zero" and not layer.latent_out.any()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, padding=1))
    authors = DCDConv2d(4, 6, 3, padding=1, attention_init="authors")
    assert authors.latent_out.abs().sum() > 0 and authors.attention.scale.weight.abs().sum() > 0
    assert "attention_init='authors'" in repr(authors)


@pytest.mark.parametrize("attention_init", ["zero", "authors"])
def test_resnet_starts_at_chance_loss(attention_init):
    # The classifier's P (Kaiming normal before) gave logits of std ~4 and a first loss ~2x ln(10).
    torch.manual_seed(0)
    model = create_model(
        "resnet18",
        conv="dcd",
        width=0.0625,
        stem="cifar",
        num_classes=10,
        in_chans=1,
        attention_init=attention_init,
    )
    logits = model(torch.randn(16, 1, 16, 16))
    loss = F.cross_entropy(logits, torch.randint(0, 10, (16,)))
    assert abs(loss.item() - math.log(10)) < 0.1


def test_trains_at_batch_1():
    # Batch statistics of a single value per channel are undefined: the running ones are used.
    layer = DynamicLinear(16, 10, kind="dcd")
    before = layer.conv.latent_norm.running_mean.clone()
    layer(torch.randn(1, 16)).sum().backward()
    torch.testing.assert_close(layer.conv.latent_norm.running_mean, before)
    model = create_model("mobilenet_v2", conv="dcd", width=0.25, num_classes=10, stem="cifar")
    model(torch.randn(1, 3, 32, 32)).sum().backward()


def test_dynamic_linear_is_the_dcd_classifier():
    linear = DynamicLinear(20, 7, kind="dcd", latent_dim=3, squeeze_channels=4).eval()
    assert linear.bias is not None and linear.weight.shape == (7, 20, 1, 1)
    x = torch.randn(5, 20)
    with torch.no_grad():
        expected = reference_forward(linear.conv, x[:, :, None, None])[..., 0, 0]
        torch.testing.assert_close(linear(x), expected)
    with pytest.raises(ValueError, match="no kernel_attention"):
        linear(x, torch.ones(5, 2))


def test_onnx_export_runs_at_another_batch_size():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = nn.Sequential(
        DCDConv2d(3, 8, 3, padding=1, pool_size=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        DCDConv2d(8, 16, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        DynamicLinear(16, 4, kind="dcd", latent_dim=4, squeeze_channels=4),
    ).eval()
    assert_onnx_matches_at_other_batch_sizes(model, (3, 12, 12))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The ODConv paper's MobileNetV2 + DCD rows (seeds/001), which the DCD code gives with fc_squeeze 16,
# 16 and 8 (docs/design.md, section 10), and the DCD code's own default fc_squeeze 8 at 1.0x and 0.75x.
@pytest.mark.parametrize(
    ("width", "options", "millions"),
    [
        (1.0, {}, 5.72),
        (0.75, {}, 4.08),
        (0.5, {}, 3.06),
        (1.0, {"fc_squeeze": 8}, 7.45),
        (0.75, {"fc_squeeze": 8}, 5.12),
    ],
)
def test_mobilenet_v2_counts_match_the_seed_table(width, options, millions):
    with torch.device("meta"):
        model = create_model("mobilenet_v2", conv="dcd", width=width, **options)
    assert round(_params(model) / 1e6, 2) == millions


def test_mobilenet_v2_layout_is_the_dcd_codes():
    with torch.device("meta"):
        model = create_model("mobilenet_v2", conv="dcd")
    dynamic = {name for name, m in model.named_modules() if isinstance(m, DCDConv2d)}
    # features.1 (expansion 1) stays static; each other block: expansion conv.0.0 and projection conv.2.
    blocks = {f"features.{i}.conv.{j}" for i in range(2, 18) for j in ("0.0", "2")}
    assert dynamic == blocks | {"classifier.1.conv"}
    assert isinstance(model.features[18][0], nn.Conv2d)  # the last 1x1 convolution
    assert isinstance(model.features[2].conv[1][0], nn.Conv2d)  # depthwise
    # DYModule(24, 144): pool 2x2, L = min(96, 144) // 8 = 12; DYModule(144, 24): pool 1, L = 24 // 2 = 12
    assert dcd_mobilenet_v2_latent(24, 144) == (12, 2) and dcd_mobilenet_v2_latent(144, 24) == (12, 1)
    # DYModule(16, 96): L = min(64, 96) // 8 = 8; attention width max(64, 64) // 16 = 4
    assert (model.features[2].conv[0][0].latent_dim, model.features[2].conv[0][0].squeeze_channels) == (8, 4)
    classifier = model.classifier[1].conv
    assert (classifier.latent_dim, classifier.squeeze_channels, classifier.bias is not None) == (32, 32, True)


def test_mobilenet_v2_latent_rule():
    # in 16 -> out 96: pooled 64, min(64, 96) // 8 = 8, 8**2 = 64 <= 128: L = 8
    assert dcd_mobilenet_v2_latent(16, 96) == (8, 2)
    # in 960 -> out 160: min(960, 160) // 2 = 80, 6400 > 1920 -> //4 = 40, 1600 <= 1920: L = 40
    assert dcd_mobilenet_v2_latent(960, 160) == (40, 1)


def test_resnets_replace_the_block_convolutions_and_the_classifier():
    with torch.device("meta"):
        resnet18 = create_model("resnet18", conv="dcd")
        resnet50 = create_model("resnet50", conv="dcd")
    assert isinstance(resnet18.conv1, nn.Conv2d) and isinstance(resnet18.layer2[0].downsample[0], nn.Conv2d)
    block = resnet18.layer2[0].conv1
    assert (block.pool_size, block.latent_dim) == (2, 16)  # conv_basic_dy(64, ...): int(sqrt(64 * 4))
    assert (resnet50.layer3[0].conv2.pool_size, resnet50.layer3[0].conv2.latent_dim) == (1, 16)  # sqrt(256)
    assert isinstance(resnet50.fc, DynamicLinear)
    model = create_model("resnet18", conv="dcd", num_classes=10, stem="cifar", width=0.25).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_profile_counts_each_part():
    layer = DCDConv2d(16, 32, 3, padding=1, pool_size=2)
    counts = profile(nn.Sequential(layer), (16, 8, 8))
    (record,) = counts.layers
    latent, squeeze = layer.latent_dim, layer.squeeze_channels
    positions = 8 * 8
    assert record.type == "DCDConv2d" and record.params == _params(layer)
    assert record.conv == positions * (32 * 16 * 9 + latent * 16 + latent * latent + 32 * latent)
    pooled = 16 * 4
    fcs = pooled * squeeze + squeeze * squeeze + squeeze * latent * latent + squeeze * 32
    assert record.attention == 16 * positions + fcs
    assert record.scaling == 32 * positions
    assert record.aggregation == 0


# The ODConv paper's MAdds of MobileNetV2 + DCD (seeds/001), in millions.
PUBLISHED_MADDS = {1.0: 318.4, 0.75: 222.9, 0.5: 105.6}


@pytest.mark.parametrize("width", sorted(PUBLISHED_MADDS))
def test_mobilenet_v2_macs_relative_to_the_published(width):
    """The published figures lie 0.7-2% above this count without the latent projections Qᵀ and P
    (which run at every output position): they leave those out (docs/models.md)."""
    with torch.device("meta"):
        model = create_model("mobilenet_v2", conv="dcd", width=width)
    counts = profile(model, (3, 224, 224))
    modules = dict(model.named_modules())
    projections = sum(
        record.output_shape[-1]
        * record.output_shape[-2]
        * layer.latent_dim
        * (layer.in_channels + layer.out_channels)
        for record in counts.layers
        if isinstance(layer := modules[record.name], DCDConv2d)
    )
    without_projections = (counts.macs - projections) / 1e6
    assert 0.005 < (PUBLISHED_MADDS[width] - without_projections) / PUBLISHED_MADDS[width] < 0.02


def test_vanishing_dynamic_parts_give_the_static_convolution():
    # A DCD layer whose dynamic parts vanish (Λ = 1, P = 0) is the static convolution.
    layer = DCDConv2d(4, 6, 3, padding=1).eval()
    layer.latent_out.data.zero_()
    layer.attention.scale.weight.data.zero_()
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, padding=1))
