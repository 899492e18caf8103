"""profile(): exact static MACs, the dynamic convention on hand-counted layers, the relation to the
published ResNet-18 figures; measure_speed(); the ``fmdconv profile`` command."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fmdconv.cli import profile as profile_command
from fmdconv.layers import create_conv2d, dynamic_layers, set_attentions, set_formulation
from fmdconv.models import create_model
from fmdconv.profiling import measure_speed, profile


def on_meta(name: str, conv: str, kernel_num: int = 4) -> nn.Module:
    """A model on the meta device: profile() then sees the shapes without computing anything."""
    with torch.device("meta"):
        return create_model(name, conv=conv, kernel_num=kernel_num)


def test_static_resnet18_at_224_is_exact() -> None:
    counts = profile(on_meta("resnet18", "static"), (3, 224, 224))
    assert counts.params == 11_689_512
    assert counts.macs == 1_814_073_344  # the papers' 1.814G
    assert counts.breakdown == {"conv": counts.macs, "attention": 0, "aggregation": 0, "scaling": 0}


def test_static_macs_equal_torch_flop_counter() -> None:
    # FlopCounterMode counts grouped convolutions exactly, FLOPs = 2 * MACs (docs/design.md, section 6).
    model = create_model("mobilenet_v2", conv="static", width=0.5, num_classes=10).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 48, 48))
    assert profile(model, (3, 48, 48)).macs * 2 == counter.get_total_flops()


def hand_count(
    c_in: int,
    c_out: int,
    k: int,
    size: int,
    groups: int,
    n: int,
    trunk: int | None,
    heads: dict[str, int],
    mlp: tuple[int, int] | None,
    bias: bool,
    out_size: int | None = None,
) -> int:
    """MACs of one dynamic layer on a ``size`` x ``size`` input giving an ``out_size`` x ``out_size``
    output (default: the same, stride 1 and 'same' padding), by the documented convention."""
    out_pixels = (size if out_size is None else out_size) ** 2
    kernel = c_out * (c_in // groups) * k * k
    conv = out_pixels * kernel
    fcs = (c_in * trunk if trunk else 0) + sum(trunk * h for h in heads.values())
    fcs += c_in * mlp[0] + mlp[0] * mlp[1] if mlp else 0
    attention = c_in * size * size + fcs  # global average pooling + FCs
    has_kernel_attention = "kernel" in heads or mlp is not None
    aggregation = n * (kernel + (c_out if bias else 0)) * has_kernel_attention + kernel * ("spatial" in heads)
    scaling = c_in * size * size * ("input" in heads) + c_out * out_pixels * ("output" in heads)
    return conv + attention + aggregation + scaling


LAYERS = {
    # ODConv 16->32 3x3, n=4: trunk d = max(16/16, 16) = 16, heads in 16, out 32, spatial 9, kernel 4.
    "od": (dict(c_in=16, c_out=32, k=3, groups=1, n=4), dict(trunk=16, mlp=None, bias=False),
           {"input": 16, "output": 32, "spatial": 9, "kernel": 4}),
    # FMDConv 40->40 depthwise 3x3, n=4: no output head; kernel MLP hidden int(40/4)+1 = 11; biases.
    "fmd": (dict(c_in=40, c_out=40, k=3, groups=40, n=4), dict(trunk=16, mlp=(11, 4), bias=True),
            {"input": 40}),
    # DyConv 64->32 1x1, n=3: no trunk; hidden int(64/4)+1 = 17.
    "dy": (dict(c_in=64, c_out=32, k=1, groups=1, n=3), dict(trunk=None, mlp=(17, 3), bias=True), {}),
    # CondConv 24->24 3x3, n=8: one routing FC 24 -> 8 (counted as the MLP's first FC).
    "cond": (dict(c_in=24, c_out=24, k=3, groups=1, n=8), dict(trunk=None, mlp=(8, 0), bias=True), {}),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(LAYERS))
def test_dynamic_layer_macs_match_a_hand_count_whatever_the_formulation(kind: str) -> None:
    geometry, paths, heads = LAYERS[kind]
    c_in, c_out, k = geometry["c_in"], geometry["c_out"], geometry["k"]
    layer = create_conv2d(
        kind, c_in, c_out, k, 1, k // 2, groups=geometry["groups"], kernel_num=geometry["n"]
    )
    expected = hand_count(**geometry, size=8, heads=heads, **paths)
    model = nn.Sequential(layer)
    for formulation in ("grouped", "mixed", "matmul"):
        if kind == "od" and formulation == "mixed":
            continue  # not exact with spatial attention
        set_formulation(model, formulation)
        assert profile(model, (c_in, 8, 8)).macs == expected


def test_ablated_attentions_are_not_counted() -> None:
    model = nn.Sequential(create_conv2d("od", 16, 32, 3, 1, 1, kernel_num=4))
    full = profile(model, (16, 8, 8))
    set_attentions(model, input=False, spatial=False)
    ablated = profile(model, (16, 8, 8))
    kernel = 32 * 16 * 9
    assert full.macs - ablated.macs == 16 * 64 + kernel  # input scaling and spatial product


def independent_od_resnet18_count(n: int) -> int:
    """MACs of the ODConv ResNet-18 at 224x224 counted without profile(): the static network's by
    FlopCounterMode (the dynamic one runs the same convolutions), plus each block convolution's
    attention, aggregation and scaling terms by hand (ODConv heads: input C_in, output C_out,
    spatial k*k, kernel n when n > 1; trunk width max(C_in // 16, 16))."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        on_meta("resnet18", "static").eval()(torch.randn(1, 3, 224, 224, device="meta"))
    total = counter.get_total_flops() // 2
    model = on_meta("resnet18", "od", n).eval()
    sizes: list[tuple[int, int]] = []
    for layer in dynamic_layers(model):
        layer.register_forward_hook(
            lambda m, inputs, output: sizes.append((inputs[0].shape[-1], output.shape[-1]))
        )
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224, device="meta"))
    for layer, (size, out_size) in zip(dynamic_layers(model), sizes, strict=True):
        c_in, c_out, k = layer.in_channels, layer.out_channels, layer.kernel_size[0]
        heads = {"input": c_in, "output": c_out} | ({"spatial": k * k} if k > 1 else {})
        heads |= {"kernel": n} if n > 1 else {}
        geometry = dict(c_in=c_in, c_out=c_out, k=k, groups=1, n=n)
        paths = dict(trunk=max(c_in // 16, 16), mlp=None, bias=False)
        layer_total = hand_count(**geometry, size=size, out_size=out_size, heads=heads, **paths)
        total += layer_total - out_size**2 * c_out * c_in * k * k  # the convolution is counted above
    return total


def test_relation_to_the_published_resnet18_figures() -> None:
    """ODConv: 1.838G (1x) and 1.916G (4x) published; DyConv 4x: 1.861G (ODConv paper, Table 2).

    This convention gives 1.830G and 1.874G for ODConv and reproduces DyConv's 1.861G. The authors'
    ODConv figures are the static MACs + attention MACs + (2n + [n > 1]) * K per layer: they charge
    the spatial and kernel attention products on each of the n kernels and no feature-map scaling.
    """
    published = {1: 1.838e9, 4: 1.916e9}
    for n, figure in published.items():
        model = on_meta("resnet18", "od", n)
        counts = profile(model, (3, 224, 224))
        kernel_elements = sum(layer.weight[0].numel() for layer in dynamic_layers(model))
        parts = counts.breakdown
        assert parts["conv"] == 1_814_073_344
        independent = independent_od_resnet18_count(n)
        assert counts.macs == independent
        assert round(independent / 1e6) == {1: 1830, 4: 1874}[n]  # the figures docs/models.md quotes
        authors = parts["conv"] + parts["attention"] + (2 * n + (n > 1)) * kernel_elements
        assert abs(authors - figure) / figure < 1e-3  # 1.838G exactly, 1.915G against 1.916G
        assert counts.macs < figure
    dyconv = profile(on_meta("resnet18", "dy"), (3, 224, 224))
    assert round(dyconv.macs / 1e9, 3) == 1.861


def test_profile_restores_modes_and_reports_layers() -> None:
    model = create_model("resnet18", conv="fmd", kernel_num=2, num_classes=10, stem="cifar")
    model.train()
    model.layer1.eval()
    counts = profile(model, (3, 16, 16))
    assert model.training and not model.layer1.training and model.layer2.training
    names = [layer.name for layer in counts.layers]
    assert names[0] == "conv1" and names[-1] == "fc" and "layer1.0.conv1" in names
    assert not any("gate" in name for name in names)  # attention FCs are inside their dynamic layer
    table = counts.table(max_rows=3)
    assert table.splitlines()[0].split()[:3] == ["layer", "type", "output"] and "total" in table
    assert json.loads(json.dumps(counts.to_dict()))["macs"] == counts.macs
    with pytest.raises(ValueError, match="input_size"):
        profile(model, (3, 0, 16))


def test_measure_speed_reports_median_spread_threads_and_restores_state() -> None:
    model = nn.Sequential(
        create_conv2d("fmd", 3, 8, 3, 1, 1, kernel_num=2), nn.Flatten(), nn.Linear(8 * 64, 4)
    )
    model.eval()
    threads = torch.get_num_threads()
    for mode in ("inference", "train"):
        result = measure_speed(model, (3, 8, 8), batch_size=2, mode=mode, warmup=1, repeats=3, threads=1)
        assert result.mode == mode and result.threads == 1 and result.device == "cpu"
        assert len(result.times) == 3 and result.quartiles[0] <= result.median <= result.quartiles[1]
        assert result.throughput == pytest.approx(2 / result.median)
        assert "ms per batch of 2" in result.summary()
    assert torch.get_num_threads() == threads and not model.training
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="mode must be one of inference, train"):
        measure_speed(model, (3, 8, 8), mode="eval")


def main(argv: list[str]) -> int:
    """Run ``fmdconv profile`` through its own parser (the sub-command registered alone)."""
    parser = argparse.ArgumentParser(prog="fmdconv")
    profile_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def test_cli_single_model(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["profile", "--model", "mobilenet_v2", "--width", "0.5", "--conv", "od:1", "--input-size", "32"]
    assert main([*args, "--repeats", "1", "--warmup", "0"]) == 0
    text = capsys.readouterr().out
    assert "params  2,425,537" in text and "MACs" in text and "ms per batch of 1" in text


def test_cli_comparison_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["profile", "--model", "mobilenet_v2", "--width", "0.5", "--input-size", "32", "--no-speed"]
    assert main([*args, "--conv", "static", "--conv", "od:4"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split() == ["conv", "kernels", "params", "MACs"]
    assert [row.split()[:2] for row in rows[3:]] == [["static", "-"], ["od", "4"]]
    assert main([*args, "--conv", "od:4", "--json"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert (entry["conv"], entry["kernel_num"], entry["params"]) == ("od", 4, 4_435_501)


def test_cli_rejects_unknown_names_listing_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["profile", "--model", "resnet19"])
    assert "resnet18" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["profile", "--model", "resnet18", "--conv", "odd"])
    assert "static, cond, dy, od, fmd" in capsys.readouterr().err
    assert main(["profile", "--model", "resnet18", "--conv", "static", "--width", "-1", "--no-speed"]) == 2
    assert "width" in capsys.readouterr().err


def test_shared_routing_is_counted_once_per_block() -> None:
    model = create_model("mobilenet_v2", conv="cond", kernel_num=2, width=0.5)
    layers = {layer.name: layer for layer in profile(model, (3, 64, 64)).layers}
    routing = layers["features.12.routing"]
    channels, height, width = routing.input_shape
    assert routing.attention == channels * height * width + channels * 2 and routing.conv == 0
    assert layers["features.12.conv.0.0"].attention == 0  # takes the block's routing, pools nothing
    assert layers["classifier.1.conv"].attention == 0
    assert layers["features.12.conv.0.0"].aggregation > 0
