"""State dicts of the authors' ODConv, FMDConv and DyConv code load into fmdconv and give the same outputs.

``AuthorsDynamicConv`` below is a test-only re-statement of the authors' layers in their exact layout
(1x1-convolution attention weights, ``attention``/``attention2`` names, temperatures as plain
attributes) and of their forward (docs/design.md, sections 1 and 7), written per sample so that it
shares no code with the layers under test.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmdconv.compat import (
    DEFAULT_TEMPERATURES,
    convert_state_dict,
    load_authors_checkpoint,
    unwrap_checkpoint,
)
from fmdconv.layers import DynamicConv2d, create_conv2d
from fmdconv.models import create_model

KIND_OF_SOURCE = {"odconv": "od", "fmdconv": "fmd", "dyconv": "dy"}


class AuthorsAttention(nn.Module):
    """The ODConv trunk (``attention``): fc -> bn -> relu and the heads that apply."""

    def __init__(self, c_in: int, c_out: int, k: int, groups: int, n: int, kernel_head: bool) -> None:
        super().__init__()
        d = max(int(c_in * 0.0625), 16)
        self.fc = nn.Conv2d(c_in, d, 1, bias=False)
        self.bn = nn.BatchNorm2d(d)
        self.channel_fc = nn.Conv2d(d, c_in, 1)
        if not c_in == c_out == groups:
            self.filter_fc = nn.Conv2d(d, c_out, 1)
        if kernel_head and k > 1:
            self.spatial_fc = nn.Conv2d(d, k * k, 1)
        if kernel_head and n > 1:
            self.kernel_fc = nn.Conv2d(d, n, 1)


class AuthorsKernelMLP(nn.Module):
    """DyConv's attention (``fc1`` no bias, ``fc2``); FMDConv's ``attention2``."""

    def __init__(self, c_in: int, n: int) -> None:
        super().__init__()
        hidden = n if c_in == 3 else int(c_in * 0.25) + 1
        self.fc1 = nn.Conv2d(c_in, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, n, 1)


class AuthorsDynamicConv(nn.Module):
    def __init__(
        self,
        source: str,
        c_in: int,
        c_out: int,
        k: int,
        stride: int = 1,
        groups: int = 1,
        n: int = 4,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.source, self.stride, self.padding, self.groups = source, stride, (k - 1) // 2, groups
        self.weight = nn.Parameter(torch.randn(n, c_out, c_in // groups, k, k) * 0.2)
        if bias and source in ("fmdconv", "dyconv"):
            self.bias = nn.Parameter(torch.randn(n, c_out) * 0.1)
        if source in ("odconv", "fmdconv"):
            self.attention = AuthorsAttention(c_in, c_out, k, groups, n, kernel_head=source == "odconv")
        if source == "fmdconv":
            self.attention2 = AuthorsKernelMLP(c_in, n)
        if source == "dyconv":
            self.attention = AuthorsKernelMLP(c_in, n)
        gate, kernel = DEFAULT_TEMPERATURES[source]
        self.temperature = gate if source != "dyconv" else kernel  # ODConv: one T for all heads
        self.kernel_temperature = kernel

    def _sample(self, x: Tensor) -> Tensor:
        """One sample (1, C, H, W), the authors' formula with attention products on the kernels."""
        pooled = x.mean((2, 3), keepdim=True)
        weight, bias, scale_in, scale_out = self.weight, getattr(self, "bias", None), 1.0, 1.0
        trunk = self.attention if self.source != "dyconv" else None
        if trunk is not None:
            hidden = F.relu(trunk.bn(trunk.fc(pooled)))
            scale_in = torch.sigmoid(trunk.channel_fc(hidden) / self.temperature)
            if hasattr(trunk, "filter_fc"):
                scale_out = torch.sigmoid(trunk.filter_fc(hidden) / self.temperature)
            if hasattr(trunk, "spatial_fc"):
                k = weight.shape[-1]
                weight = weight * torch.sigmoid(trunk.spatial_fc(hidden) / self.temperature).view(
                    1, 1, 1, k, k
                )
        mlp = (
            self.attention2
            if self.source == "fmdconv"
            else self.attention
            if self.source == "dyconv"
            else None
        )
        kernel_logits = (
            mlp.fc2(F.relu(mlp.fc1(pooled))) / self.kernel_temperature if mlp is not None else None
        )
        if trunk is not None and hasattr(trunk, "kernel_fc"):
            kernel_logits = trunk.kernel_fc(hidden) / self.temperature
        if kernel_logits is None:
            mixed, mixed_bias = weight.sum(0), None if bias is None else bias.sum(0)
        else:
            attention = F.softmax(kernel_logits.flatten(), 0)
            mixed = (attention.view(-1, 1, 1, 1, 1) * weight).sum(0)
            mixed_bias = None if bias is None else attention @ bias
        y = F.conv2d(x * scale_in, mixed, mixed_bias, self.stride, self.padding, 1, self.groups)
        return y * scale_out

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self._sample(x[b : b + 1]) for b in range(x.shape[0])])


def randomise(module: nn.Module) -> None:
    """Non-trivial values everywhere, BN running statistics included, so the mapping is exercised."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=generator)
                tensor.copy_(values + 0.5 if name.endswith("running_var") else (values - 0.5) * 0.6)


def authors_model(name: str, source: str, **options: object) -> nn.Module:
    """A backbone in the authors' layout: each dynamic layer swapped for the authors' layer."""
    model = create_model(name, conv=KIND_OF_SOURCE[source], **{"num_classes": 10, **options})
    for layer_name, layer in list(model.named_modules()):
        if isinstance(layer, DynamicConv2d):
            parent, _, child = layer_name.rpartition(".")
            replacement = AuthorsDynamicConv(
                source,
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size[0],
                layer.stride[0],
                layer.groups,
                layer.kernel_num,
                bias=layer.bias is not None,
            )
            setattr(model.get_submodule(parent), child, replacement)
    randomise(model)
    return model.eval()


LAYER_CASES = [
    pytest.param(16, 32, 3, 1, 1, 4, id="3x3"),
    pytest.param(16, 24, 1, 2, 1, 4, id="1x1-strided"),
    pytest.param(24, 24, 3, 1, 24, 4, id="depthwise"),
    pytest.param(16, 16, 3, 1, 1, 1, id="one-kernel"),
]


@pytest.mark.parametrize("source", ["odconv", "fmdconv", "dyconv"])
@pytest.mark.parametrize(("c_in", "c_out", "k", "stride", "groups", "n"), LAYER_CASES)
@pytest.mark.parametrize("temperatures", ["default", "annealing"])
def test_single_layer_loads_strictly_and_matches_authors_forward(
    source: str, c_in: int, c_out: int, k: int, stride: int, groups: int, n: int, temperatures: str
) -> None:
    authors = AuthorsDynamicConv(source, c_in, c_out, k, stride, groups, n)
    randomise(authors)
    authors.eval()
    state = authors.state_dict()
    layer = create_conv2d(
        KIND_OF_SOURCE[source], c_in, c_out, k, stride, (k - 1) // 2, groups=groups, kernel_num=n
    )
    given: dict[str, float] = {}
    if temperatures == "annealing":  # mid-schedule values, set on both sides (ODConv: one T for all)
        gate, kernel = {"odconv": (2.5, 2.5), "fmdconv": (2.5, 0.6), "dyconv": (None, 0.6)}[source]
        authors.temperature, authors.kernel_temperature = gate or kernel, kernel
        given = {"kernel_temperature": kernel} | ({} if gate is None else {"gate_temperature": gate})
    layer.load_state_dict(convert_state_dict(state, source, **given), strict=True)
    layer.eval()
    x = torch.randn(3, c_in, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), authors(x), rtol=1e-4, atol=1e-5)

    back = convert_state_dict(layer.state_dict(), source, direction="to_authors")
    assert back.keys() == state.keys()  # with one kernel too: the same kernel paths as the authors'
    assert all(torch.equal(back[key], state[key]) for key in state)


@pytest.mark.parametrize(
    ("name", "source", "options"),
    [
        ("resnet18", "odconv", {"kernel_num": 2}),
        ("resnet18", "dyconv", {"kernel_num": 2}),
        ("mobilenet_v2", "fmdconv", {"kernel_num": 2, "width": 0.5}),
    ],
)
def test_whole_model_round_trip_and_outputs(name: str, source: str, options: dict) -> None:
    authors = authors_model(name, source, **options)
    state = authors.state_dict()
    model = create_model(name, conv=KIND_OF_SOURCE[source], num_classes=10, **options)
    model.load_state_dict(convert_state_dict(state, source), strict=True)
    model.eval()
    # One image: the single-layer test covers batches, and the authors' forward loops over samples.
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), authors(x), rtol=1e-4, atol=1e-5)
    back = convert_state_dict(model.state_dict(), source, direction="to_authors")
    assert back.keys() == state.keys()
    assert all(torch.equal(back[key], state[key]) for key in state)


def test_temperatures_are_added_as_given() -> None:
    authors = AuthorsDynamicConv("fmdconv", 16, 16, 3)
    converted = convert_state_dict(authors.state_dict(), "fmdconv")
    assert converted["gate_temperature"].item() == 1.0
    assert converted["kernel_temperature"].item() == 34.0  # the released FMDConv code never anneals it
    converted = convert_state_dict(authors.state_dict(), "fmdconv", gate_temperature=5, kernel_temperature=2)
    assert (converted["gate_temperature"].item(), converted["kernel_temperature"].item()) == (5.0, 2.0)
    dyconv = convert_state_dict(AuthorsDynamicConv("dyconv", 16, 16, 3).state_dict(), "dyconv")
    assert "gate_temperature" not in dyconv
    with pytest.raises(ValueError, match="gate_temperature"):
        convert_state_dict(AuthorsDynamicConv("dyconv", 16, 16, 3).state_dict(), "dyconv", gate_temperature=2)


def test_wrong_source_or_direction_is_named() -> None:
    odconv = AuthorsDynamicConv("odconv", 16, 16, 3).state_dict()
    with pytest.raises(ValueError, match="accepted: odconv, fmdconv, dyconv"):
        convert_state_dict(odconv, "condconv")
    with pytest.raises(ValueError, match="to_fmdconv, to_authors"):
        convert_state_dict(odconv, "odconv", direction="sideways")
    with pytest.raises(ValueError, match="kernel_fc"):
        convert_state_dict(odconv, "fmdconv")  # an ODConv layer is not an FMDConv one
    with pytest.raises(ValueError, match="no dyconv layer"):
        convert_state_dict(odconv, "dyconv")


def test_checkpoint_file_with_ddp_prefix(tmp_path) -> None:
    authors = authors_model("resnet18", "odconv", kernel_num=1)
    wrapped = {"epoch": 100, "state_dict": {f"module.{k}": v for k, v in authors.state_dict().items()}}
    path = tmp_path / "od_resnet18_1x.pth.tar"
    torch.save(wrapped, path)
    model = create_model("resnet18", conv="od", kernel_num=1, num_classes=10)
    model.load_state_dict(load_authors_checkpoint(path, "odconv"), strict=True)
    assert unwrap_checkpoint(wrapped).keys() == authors.state_dict().keys()
    with pytest.raises(ValueError, match="no state dict"):
        unwrap_checkpoint({"epoch": 3})


@pytest.mark.parametrize(("source", "published"), [("fmdconv", 12.233), ("odconv", 11.94), ("dyconv", None)])
def test_one_kernel_models_have_the_authors_parameters_and_load_strictly(
    source: str, published: float | None
) -> None:
    """At n = 1 the authors keep FMDConv's and DyConv's kernel MLP and drop ODConv's kernel head."""
    authors = authors_model("resnet18", source, kernel_num=1, num_classes=1000)
    model = create_model("resnet18", conv=KIND_OF_SOURCE[source], kernel_num=1, num_classes=1000)
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in authors.parameters())
    if published is not None:
        assert round(count / 1e6, 2 if source == "odconv" else 3) == published
    model.load_state_dict(convert_state_dict(authors.state_dict(), source), strict=True)
    model.eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), authors(x), rtol=1e-4, atol=1e-5)
