"""convert(): any model's nn.Conv2d layers become dynamic, in place, starting from the static model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fmdconv.layers import DynamicConv2d, conv_type
from fmdconv.models import convert, create_model


class SmallNet(nn.Module):
    """A user's own model: stem, strided conv with bias, depthwise, pointwise, 'same' padding, classifier."""

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_chans, 8, 3, padding=1, bias=False)
        self.body = nn.Sequential(
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
            nn.Conv2d(16, 24, 1),
            nn.ReLU(),
            nn.Conv2d(24, 24, 3, padding="same", padding_mode="reflect"),
        )
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)).mean((2, 3)))


def trained_looking(model: nn.Module) -> nn.Module:
    """Non-zero biases and BN statistics, as in a pretrained model."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("bias") or name.endswith("running_mean"):
                tensor.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("kind", ["cond", "dy", "od", "fmd"])
@pytest.mark.parametrize("kernel_num", [1, 3])
def test_converted_model_starts_exactly_where_the_static_one_was(kind: str, kernel_num: int) -> None:
    model = trained_looking(SmallNet())
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        expected = model(x)
    assert convert(model, kind, kernel_num=kernel_num) is model
    assert type(model.stem) is nn.Conv2d  # the stem stays static
    dynamic = [m for m in model.modules() if isinstance(m, DynamicConv2d)]
    assert len(dynamic) == 4 and all(type(m) is conv_type(kind) for m in dynamic)
    assert not model.body[2].training  # the converted layers keep the mode of the ones they replace
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


def test_every_kernel_is_a_copy_of_the_static_weight() -> None:
    model = trained_looking(SmallNet())
    static = model.body[2]
    convert(model, "dy", kernel_num=4, preserve_output=False)
    layer = model.body[2]
    assert layer.weight.shape == (4, 16, 8, 3, 3)
    for kernel, bias in zip(layer.weight, layer.bias, strict=True):
        torch.testing.assert_close(kernel, static.weight, rtol=0, atol=0)
        torch.testing.assert_close(bias, static.bias, rtol=0, atol=0)
    # Geometry is kept, the 'same'/reflect conv included.
    assert (layer.stride, layer.padding, layer.groups) == ((2, 2), (1, 1), 1)
    assert (model.body[7].padding, model.body[7].padding_mode) == ("same", "reflect")


def test_od_preserving_scale_is_eight_for_a_3x3_and_depthwise_has_no_output_attention() -> None:
    model = trained_looking(SmallNet())
    static = model.body[7].weight.detach().clone()
    convert(model, "od", kernel_num=2)
    # input, output and spatial gates at 1/2 each; a uniform softmax keeps the mean of the kernels.
    torch.testing.assert_close(model.body[7].weight[0], static * 8)
    depthwise = model.body[4]
    assert depthwise.available_attentions == ("input", "spatial", "kernel")


def test_include_exclude_and_stem() -> None:
    model = convert(SmallNet(), "fmd", include=["body.*"], exclude=["body.4"])
    assert [isinstance(model.body[i], DynamicConv2d) for i in (2, 4, 5, 7)] == [True, False, True, True]
    grey = convert(SmallNet(in_chans=1), "cond", keep_stem=False)
    assert isinstance(grey.stem, DynamicConv2d) and grey.stem.in_channels == 1
    assert grey(torch.randn(1, 1, 8, 8)).shape == (1, 5)


def test_static_backbone_converts_to_the_method_layout_of_create_model() -> None:
    model = create_model("resnet18", conv="static", num_classes=10)
    convert(model, "od", kernel_num=1, exclude=["*downsample*"])
    reference = create_model("resnet18", conv="od", kernel_num=1, num_classes=10)
    assert model.state_dict().keys() == reference.state_dict().keys()


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="cond, dy, od, fmd"):
        convert(SmallNet(), "static")
    with pytest.raises(ValueError, match="convert the module that contains it"):
        convert(nn.Conv2d(3, 3, 3), "fmd")
    with pytest.raises(ValueError, match="include must be a sequence"):
        convert(SmallNet(), "fmd", include="body.*")
    with pytest.raises(ValueError, match="reduction"):
        convert(SmallNet(), "dy", reduction=0.5)
