"""docs/adding_a_method.md holds: a layer and one record make a method the whole library can use.

The test adds a throw-away method (a DynamicConvSpec preset and its record, registered here and
removed afterwards) and builds it through every entry point the page names, without touching any
other file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fmdconv import convert, create_conv2d, create_model, profile
from fmdconv.layers import (
    ConvSite,
    DynamicConv2d,
    DynamicConvSpec,
    DynamicLinear,
    MethodInfo,
    conv_names,
    method_info,
    method_names,
    register_method,
    unregister_method,
)

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "adding_a_method.md"


class InputGateConv2d(DynamicConv2d):
    spec = DynamicConvSpec(
        gates=("input",), kernel_source="mlp", gate_temperature=30.0, kernel_temperature=30.0
    )


def only_3x3(site: ConvSite) -> bool:
    return site.kernel_size in (3, (3, 3))


RECORD = MethodInfo(
    "ig",
    "InputGate",
    InputGateConv2d,
    frozenset({"block", "downsample", "classifier"}),
    backbone_bias=False,
    replaces=only_3x3,
)


@pytest.fixture
def method() -> Iterator[MethodInfo]:
    register_method(RECORD)
    try:
        yield RECORD
    finally:
        unregister_method(RECORD.name)
    assert "ig" not in method_names()


SMALL = {"width": 0.125, "num_classes": 5, "stem": "cifar"}


def test_the_page_lists_two_files_and_they_are_where_it_says() -> None:
    text = PAGE.read_text()
    touched = re.findall(r"^\d\. \*\*[^*]+\*\*: .*?`(src/fmdconv/[^`]+)`", text, re.M)
    assert touched == ["src/fmdconv/layers/<method>.py", "src/fmdconv/layers/registry.py"]
    assert (ROOT / touched[1]).is_file() and (ROOT / "src/fmdconv/layers/methods.py").is_file()
    assert "BUILT_IN" in (ROOT / touched[1]).read_text()
    assert "(docs/adding_a_method.md)" in (ROOT / "README.md").read_text()  # linked where docs are


def test_a_registered_method_is_listed_and_described(method: MethodInfo) -> None:
    assert method_names()[-1] == conv_names()[-1] == "ig"
    info = method_info("ig")
    assert info is method and info.kernel_mixture and info.convertible
    assert info.temperatures == ("gate", "kernel") and info.takes("attention_init")


def test_create_conv2d_and_dynamic_linear_build_it(method: MethodInfo) -> None:
    layer = create_conv2d("ig", 8, 16, 3, padding=1, kernel_num=2)
    assert type(layer) is InputGateConv2d and layer.available_attentions == ("input", "kernel")
    assert layer(torch.randn(2, 8, 6, 6)).shape == (2, 16, 6, 6)
    with pytest.raises(ValueError, match=r"a ig convolution \(InputGateConv2d\) has no option latent_dim"):
        create_conv2d("ig", 8, 16, 3, latent_dim=4)
    linear = DynamicLinear(8, 3, conv="ig", kernel_num=2)
    assert linear(torch.randn(4, 8)).shape == (4, 3)


def test_create_model_lays_it_out_from_its_record(method: MethodInfo) -> None:
    model = create_model("resnet18", conv="ig", kernel_num=2, **SMALL)
    dynamic = {n: m for n, m in model.named_modules() if isinstance(m, InputGateConv2d) and n != "fc.conv"}
    # Its roles and its rule: the 3x3 block convolutions; the 1x1 downsamples fail the rule.
    assert len(dynamic) == 16 and all(m.kernel_size == (3, 3) and m.bias is None for m in dynamic.values())
    assert isinstance(model.fc, DynamicLinear) and model.fc.method == "ig"
    model.train()(torch.randn(2, 3, 16, 16)).sum().backward()
    with pytest.raises(ValueError, match=r"conv='ig' \(InputGate\) has no option colour; its options: "):
        create_model("resnet18", conv="ig", colour=1, **SMALL)
    mobile = create_model("mobilenet_v2", conv="ig", kernel_num=2, width=0.25, num_classes=5)
    # The 3x3 (depthwise) convolutions of the 11 blocks of role "block", not the late blocks; the classifier.
    assert sum(isinstance(m, InputGateConv2d) for m in mobile.modules()) == 11 + 1


def test_profile_counts_it(method: MethodInfo) -> None:
    model = create_model("resnet18", conv="ig", kernel_num=2, **SMALL)
    counts = profile(model, (3, 32, 32))
    rows = [layer for layer in counts.layers if layer.type == "InputGateConv2d" and layer.name != "fc.conv"]
    assert len(rows) == 16 and all(r.attention > 0 and r.aggregation > 0 and r.scaling > 0 for r in rows)
    static = {
        r.name: r for r in profile(create_model("resnet18", conv="static", **SMALL), (3, 32, 32)).layers
    }
    assert all(r.conv == static[r.name].conv for r in rows)  # the convolution itself, as the static one


def test_convert_turns_a_static_model_into_it(method: MethodInfo) -> None:
    static = create_model("resnet18", conv="static", **SMALL).eval()
    x = torch.randn(2, 3, 16, 16)
    expected = static(x)
    converted = convert(static, conv="ig", kernel_num=2)
    # The stem is kept; the 1x1 downsamples fail the rule.
    assert sum(isinstance(m, InputGateConv2d) for m in converted.modules()) == 16
    torch.testing.assert_close(converted(x), expected, atol=1e-4, rtol=1e-4)
