"""Backbones: construction, names, shapes, feature maps and the published parameter counts."""

from __future__ import annotations

import pytest
import torch

from fmdconv.layers import CONV_KINDS
from fmdconv.models import create_model, list_models


def test_list_models() -> None:
    assert list_models() == ["mobilenet_v2", "resnet101", "resnet18", "resnet34", "resnet50"]


@pytest.mark.parametrize("conv", CONV_KINDS)
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_forward_shapes_cifar_stem_grey(name: str, conv: str) -> None:
    width = 0.5 if name == "mobilenet_v2" else 1.0
    model = create_model(name, conv=conv, num_classes=10, stem="cifar", in_chans=1, width=width).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_unknown_names_list_valid_ones() -> None:
    with pytest.raises(ValueError, match="resnet18"):
        create_model("resnet19")
    with pytest.raises(ValueError, match="fmd"):
        create_model("resnet18", conv="bogus")
    with pytest.raises(ValueError, match="imagenet"):
        create_model("resnet18", stem="tiny")
