"""Backbones: the published parameter counts, which convolutions each method replaces, torchvision
names, forward shapes and multi-scale features.

Parameter counts are taken on the meta device (no memory, no initialisation cost).
"""

from __future__ import annotations

import pytest
import torch

from fmdconv.layers import CONV_KINDS, DynamicConv2d, DynamicLinear, SharedRouting
from fmdconv.models import create_model, list_models
from fmdconv.models.conv_factory import REPLACED_ROLES
from reference import reference_forward


def param_count(name: str, conv: str, kernel_num: int = 4, **options: object) -> int:
    with torch.device("meta"):
        model = create_model(name, conv=conv, kernel_num=kernel_num, **options)
    return sum(p.numel() for p in model.parameters())


def in_millions(count: int) -> float:
    return count / 1e6


# (model, conv, kernels, width, published params in millions): ODConv paper Table 1/2,
# docs/design.md section 3, the seed's MobileNetV2 table, and the ODConv authors' README for ResNet-50/101.
PUBLISHED_ROWS = [
    ("resnet18", "static", 1, 1.0, 11.69),
    ("resnet18", "od", 1, 1.0, 11.94),
    ("resnet18", "od", 4, 1.0, 44.90),
    ("resnet18", "fmd", 4, 1.0, 45.20),
    ("resnet18", "dy", 4, 1.0, 45.47),
    ("resnet50", "static", 1, 1.0, 25.56),
    ("resnet50", "od", 1, 1.0, 28.64),
    ("resnet50", "od", 4, 1.0, 90.67),
    ("resnet101", "static", 1, 1.0, 44.55),
    ("resnet101", "od", 1, 1.0, 50.82),
    ("resnet101", "od", 2, 1.0, 90.44),
    ("mobilenet_v2", "static", 1, 1.0, 3.50),
    ("mobilenet_v2", "od", 1, 1.0, 4.94),
    ("mobilenet_v2", "od", 4, 1.0, 11.52),
    ("mobilenet_v2", "dy", 4, 1.0, 12.40),
    ("mobilenet_v2", "static", 1, 0.75, 2.64),
    ("mobilenet_v2", "dy", 4, 0.75, 7.95),
    ("mobilenet_v2", "od", 1, 0.75, 3.51),
    ("mobilenet_v2", "od", 4, 0.75, 7.50),
    ("mobilenet_v2", "dy", 4, 0.5, 4.57),
    ("mobilenet_v2", "od", 1, 0.5, 2.43),
    ("mobilenet_v2", "od", 4, 0.5, 4.44),
    # The CondConv paper's layout: experts in the final 6 blocks and the classifier, routing per block.
    ("mobilenet_v2", "cond", 8, 1.0, 22.88),
    ("mobilenet_v2", "cond", 8, 0.75, 17.51),
    ("mobilenet_v2", "cond", 8, 0.5, 13.61),
]

MOBILENET_HALF = (
    "MobileNetV2 0.5x has 1,968,680 parameters (the ODConv authors' README: 1.97M); "
    "the paper's 2.00M is the DyConv paper's rounded 2.0M"
)


def unmatched(row: tuple[str, str, int, float, float], reason: str) -> object:
    return pytest.param(*row, marks=pytest.mark.xfail(strict=True, reason=reason))


UNMATCHED_ROWS = [unmatched(("mobilenet_v2", "static", 1, 0.5, 2.00), MOBILENET_HALF)]


@pytest.mark.parametrize(
    ("name", "conv", "kernel_num", "width", "published"), PUBLISHED_ROWS + UNMATCHED_ROWS
)
def test_published_parameter_counts(
    name: str, conv: str, kernel_num: int, width: float, published: float
) -> None:
    # The ODConv paper's DyConv rows use a kernel MLP of width int(C_in / 4), without the DyConv code's +1.
    options = {"hidden_extra": 0} if conv == "dy" else {}
    count = param_count(name, conv, kernel_num, width=width, **options)
    assert abs(in_millions(count) - published) < 0.01, f"{count:,} parameters against {published}M"


def test_exact_counts_of_the_authors_code() -> None:
    # The ODConv authors' README gives 11.51M and 1.97M where the paper has 11.52M and 2.00M.
    assert param_count("mobilenet_v2", "od", 4) == 11_512_149
    assert param_count("mobilenet_v2", "static", 1, width=0.5) == 1_968_680
    assert param_count("resnet18", "static", 1) == 11_689_512


def dynamic_named(name: str, conv: str, kernel_num: int = 4, **options: object) -> dict[str, DynamicConv2d]:
    with torch.device("meta"):
        model = create_model(name, conv=conv, kernel_num=kernel_num, **options)
    return {n: m for n, m in model.named_modules() if isinstance(m, DynamicConv2d)}


def test_condconv_mobilenet_follows_the_condconv_paper() -> None:
    """Experts in features 12-17 and the classifier only; one routing FC per late block, shared."""
    model = create_model("mobilenet_v2", conv="cond", kernel_num=8)
    dynamic = {n for n, m in model.named_modules() if isinstance(m, DynamicConv2d)}
    assert {n.split(".")[1] for n in dynamic if n.startswith("features.")} == {str(i) for i in range(12, 18)}
    assert isinstance(model.classifier[1], DynamicLinear) and "classifier.1.conv" in dynamic
    routed = {n for n, m in model.named_modules() if isinstance(m, SharedRouting)}
    assert routed == {f"features.{i}.routing" for i in range(12, 18)}
    assert all(model.get_submodule(n).shared_routing for n in dynamic if n.startswith("features."))
    assert model.classifier[1].conv.shared_routing  # it takes the routing of features.17
    block = model.features[15].eval()
    assert block.use_residual
    x = torch.randn(2, block.conv[0][0].in_channels, 7, 7)
    routing = block.routing(x)
    expected = x
    for conv in (block.conv[0], block.conv[1]):
        expected = conv[2](conv[1](reference_forward(conv[0], expected, routing)))
    expected = x + block.conv[3](reference_forward(block.conv[2], expected, routing))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, atol=2e-5, rtol=1e-4)
        hidden = model.eval().features[:17](images)
        last_routing = model.features[17].routing(hidden)
        pooled = model.features[18](model.features[17](hidden)).mean((2, 3))
        expected_logits = model.classifier[1](pooled, last_routing)
        torch.testing.assert_close(model(images), expected_logits, atol=2e-5, rtol=1e-4)
        with pytest.raises(ValueError, match=r"classifier takes the routing of features\.17"):
            model.forward_head(model.forward_features(images)[-1])
        torch.testing.assert_close(
            model.forward_head(model.forward_features(images)[-1], last_routing), expected_logits
        )
    features = create_model("mobilenet_v2", conv="cond", kernel_num=2, features_only=True)
    assert [m.shape[1] for m in features.eval()(images)] == [24, 32, 96, 1280]


def test_condconv_rows_are_the_explicit_sum_of_the_condconv_layout() -> None:
    """Static MobileNetV2 + 7 extra copies of the kernels of features 12-17 and of the classifier's weights
    and biases + one routing FC (C_in -> 8) per block: the count create_model builds."""
    experts = 8
    for width in (1.0, 0.75, 0.5):
        with torch.device("meta"):
            static = create_model("mobilenet_v2", conv="static", width=width)
        late_blocks = list(static.features)[12:18]
        kernels = sum(
            m.weight.numel()
            for block in late_blocks
            for m in block.modules()
            if isinstance(m, torch.nn.Conv2d)
        )
        routing = sum(block.conv[0][0].in_channels * experts + experts for block in late_blocks)
        classifier = sum(p.numel() for p in static.classifier.parameters())
        expected = (
            sum(p.numel() for p in static.parameters()) + (experts - 1) * (kernels + classifier) + routing
        )
        assert param_count("mobilenet_v2", "cond", experts, width=width) == expected


def test_condconv_layout_options() -> None:
    uniform = dynamic_named(
        "mobilenet_v2",
        "cond",
        replaced_roles=frozenset({"block", "late_block", "head"}),
        shared_routing=False,
    )
    assert len(uniform) == len(dynamic_named("mobilenet_v2", "od")) == 51
    assert not any(m.shared_routing for m in uniform.values())
    assert not any(m.shared_routing for m in dynamic_named("resnet18", "cond").values())
    with pytest.raises(ValueError, match="shared_routing is CondConv's"):
        create_model("mobilenet_v2", conv="od", shared_routing=True)
    # Late blocks with shared routing but a static classifier: the classifier takes no routing.
    static_head = create_model(
        "mobilenet_v2", conv="cond", kernel_num=2, replaced_roles=frozenset({"late_block"})
    )
    assert isinstance(static_head.classifier[1], torch.nn.Linear)
    assert static_head.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1000)
    with pytest.raises(ValueError, match="blocks with shared routing are MobileNetV2's"):
        create_model("resnet18", conv="cond", shared_routing=True)
    with pytest.raises(ValueError, match=r"conv='static' takes no dynamic options, got \['shared_routing'\]"):
        create_model("resnet18", conv="static", shared_routing=False)


def test_which_convolutions_each_method_replaces() -> None:
    assert REPLACED_ROLES["od"] == REPLACED_ROLES["fmd"] == {"block", "late_block", "head"}
    od = dynamic_named("resnet18", "od")
    assert len(od) == 16 and "conv1" not in od and not any("downsample" in n for n in od)
    dy = dynamic_named("resnet18", "dy")
    assert len(dy) == 19 and {"layer2.0.downsample.0", "layer4.0.downsample.0"} <= dy.keys()
    assert all(m.bias is None for m in dy.values())  # as in the DyConv code's ResNet
    assert all(m.bias is not None for m in dynamic_named("resnet18", "fmd").values())  # FMDConv keeps them
    mobile = dynamic_named("mobilenet_v2", "od")
    assert "features.0.0" not in mobile and "features.18.0" in mobile and len(mobile) == 51
    assert mobile["features.2.conv.1.0"].available_attentions == ("input", "spatial", "kernel")  # depthwise
    assert dynamic_named("resnet50", "fmd", replaced_roles=frozenset({"block", "downsample"})).keys() >= {
        "layer1.0.downsample.0"
    }


def test_torchvision_module_names() -> None:
    with torch.device("meta"):
        resnet = create_model("resnet50", conv="static").state_dict()
        mobile = create_model("mobilenet_v2", conv="static").state_dict()
    resnet_keys = {"conv1.weight", "bn1.running_var", "layer1.0.conv3.weight", "layer4.2.bn3.bias"}
    resnet_keys |= {"layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight", "fc.weight", "fc.bias"}
    assert resnet_keys <= resnet.keys()
    mobile_keys = {
        "features.0.0.weight",
        "features.0.1.weight",
        "features.18.0.weight",
        "classifier.1.weight",
    }
    # First block: depthwise then projection; the others: expansion, depthwise, projection, BN.
    mobile_keys |= {"features.1.conv.0.0.weight", "features.1.conv.1.weight", "features.2.conv.0.0.weight"}
    mobile_keys |= {"features.2.conv.1.0.weight", "features.2.conv.2.weight", "features.2.conv.3.bias"}
    assert mobile_keys <= mobile.keys()


def test_list_models() -> None:
    assert list_models() == ["mobilenet_v2", "resnet101", "resnet18", "resnet34", "resnet50"]


# MobileNetV2 runs with FMDConv in the features test and with static convolutions in test_profile.
FORWARD_CASES = [("resnet18", conv) for conv in CONV_KINDS] + [
    ("mobilenet_v2", c) for c in ("cond", "dy", "od")
]


@pytest.mark.parametrize(("name", "conv"), FORWARD_CASES)
def test_forward_shapes_cifar_stem_grey(name: str, conv: str) -> None:
    width = 0.5 if name == "mobilenet_v2" else 1.0
    model = create_model(name, conv=conv, kernel_num=2, num_classes=10, stem="cifar", in_chans=1, width=width)
    model.eval()
    assert model.conv1.stride == (1, 1) if name == "resnet18" else model.features[0][0].stride == (1, 1)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "options", "channels"),
    [
        ("resnet18", {"kernel_num": 2}, [64, 128, 256, 512]),
        ("resnet50", {"kernel_num": 1}, [256, 512, 1024, 2048]),
        ("mobilenet_v2", {"kernel_num": 2, "width": 0.5}, [16, 16, 48, 1280]),
    ],
)
def test_features_only_shapes(name: str, options: dict, channels: list[int]) -> None:
    model = create_model(name, conv="fmd", features_only=True, **options).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == [info.channels for info in model.out_feature_info] == channels
    assert (
        [64 // m.shape[-1] for m in maps]
        == [info.reduction for info in model.out_feature_info]
        == [4, 8, 16, 32]
    )
    assert not hasattr(model, "fc") and not hasattr(model, "classifier")


def test_features_only_levels_and_checkpoint_loading() -> None:
    classifier = create_model("resnet18", conv="od", kernel_num=1)
    features = create_model("resnet18", conv="od", kernel_num=1, features_only=True, out_indices=(0, 2))
    result = features.load_state_dict(classifier.state_dict(), strict=False)
    assert result.missing_keys == [] and sorted(result.unexpected_keys) == ["fc.bias", "fc.weight"]
    maps = features.eval()(torch.randn(1, 3, 32, 32))
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 16, 16), (128, 4, 4)]
    cifar = create_model("resnet18", conv="static", stem="cifar", features_only=True)
    assert [info.reduction for info in cifar.out_feature_info] == [1, 2, 4, 8]
    with pytest.raises(ValueError, match="out_indices"):
        create_model("resnet18", features_only=True, out_indices=(1, 5))


def test_unknown_names_and_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="mobilenet_v2, resnet101, resnet18"):
        create_model("resnet19")
    with pytest.raises(ValueError, match="static, cond, dy, od, fmd"):
        create_model("resnet18", conv="bogus")
    with pytest.raises(ValueError, match="imagenet, cifar"):
        create_model("resnet18", stem="tiny")
    with pytest.raises(ValueError, match="width"):
        create_model("resnet18", width=-1.0)
    with pytest.raises(ValueError, match="no dynamic options"):
        create_model("resnet18", conv="static", reduction=0.25)
    with pytest.raises(ValueError, match="replaced_roles"):
        create_model("resnet18", conv="od", replaced_roles=frozenset({"decoder"}))


def test_resnet_width_scales_the_stage_widths() -> None:
    model = create_model("resnet18", conv="fmd", width=0.25, num_classes=10, stem="cifar", in_chans=1)
    assert [
        stage[0].conv1.out_channels for stage in (model.layer1, model.layer2, model.layer3, model.layer4)
    ] == [
        16,
        32,
        64,
        128,
    ]
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"width must be in \(0, 4\]"):
        create_model("resnet18", width=0.0)
