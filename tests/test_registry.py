"""One record per method: what it says, the names read from it, and the options refused with it."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import fmdconv
from fmdconv.cli import main
from fmdconv.layers import (
    CONV_KINDS,
    FEATURE_ATTENTIONS,
    KERNEL_MIXTURES,
    DynamicLinear,
    FMDConv2d,
    conv_info,
    conv_names,
    create_conv2d,
    method_info,
    method_names,
)
from fmdconv.models import METHODS, ConvFactory, MobileNetV2, create_model, method_options
from fmdconv.models.conv_factory import REPLACED_ROLES
from fmdconv.profiling.gpu_bench import KINDS
from fmdconv.train.recipe import Recipe, saved_recipe


def test_every_method_has_one_record_and_the_name_lists_come_from_them() -> None:
    assert method_names() == METHODS == (*CONV_KINDS, *FEATURE_ATTENTIONS)
    assert conv_names() == CONV_KINDS == ("static", "cond", "dy", "od", "fmd", "dcd", "fd", "kw")
    assert KERNEL_MIXTURES == ("cond", "dy", "od", "fmd")
    labels = {name: method_info(name).label for name in method_names()}
    assert labels == {
        "static": "Static",
        "cond": "CondConv",
        "dy": "DyConv",
        "od": "ODConv",
        "fmd": "FMDConv",
        "dcd": "DCD",
        "fd": "FDConv",
        "kw": "KernelWarehouse",
        "se": "SE",
        "cbam": "CBAM",
        "eca": "ECA",
    }
    assert fmdconv.method_names() == method_names() and fmdconv.method_info("fmd").layer is FMDConv2d
    assert {n: method_options(n) for n in ("od", "se")} == {
        "od": {"conv": "od", "attention": None},
        "se": {"conv": "static", "attention": "se"},
    }
    assert dict(REPLACED_ROLES) == {n: conv_info(n).replaced_roles for n in conv_names()}
    assert KINDS == ("static", "fmd", "od", "dy", "cond")  # the GPU benchmark's rows, newest first


def test_what_each_record_says_the_method_takes() -> None:
    takes = {name: method_info(name).takes for name in conv_names()}
    assert [n for n in conv_names() if takes[n]("kernel_num")] == ["cond", "dy", "od", "fmd", "fd"]
    assert [n for n in conv_names() if takes[n]("attention_init")] == ["cond", "dy", "od", "fmd", "dcd", "fd"]
    temperatures = {n: method_info(n).temperatures for n in method_names() if method_info(n).temperatures}
    assert temperatures == {"dy": ("kernel",), "od": ("gate", "kernel"), "fmd": ("gate", "kernel")}
    assert [n for n in method_names() if method_info(n).convertible] == ["cond", "dy", "od", "fmd", "fd"]
    assert [n for n in method_names() if method_info(n).shared_routing] == ["cond"]
    assert method_info("static").layer_options == method_info("se").layer_options == ()
    assert method_info("cond").layout("mobilenet_v2").shared_routing
    assert method_info("kw").layout("mobilenet_v2").replaced_roles >= {"stem"}
    assert method_info("fd").unsupported_models.keys() == {"mobilenet_v2"}


@pytest.mark.parametrize(
    ("lookup", "message"),
    [
        (lambda: method_info("nope"), r"unknown method 'nope'; accepted: static, cond, .*, eca"),
        (
            lambda: conv_info("se"),
            r"unknown conv kind 'se'; accepted: static, cond, dy, od, fmd, dcd, fd, kw",
        ),
        (lambda: create_conv2d("se", 4, 4, 3), "unknown conv kind 'se'"),
        (lambda: fmdconv.register_method("fmd"), "takes a MethodInfo"),
        (lambda: fmdconv.register_method(method_info("fmd")), "'fmd' exists already"),
        (lambda: fmdconv.unregister_method("fmd"), "built-in method"),
        (lambda: fmdconv.unregister_method("nope"), "no registered method"),
    ],
)
def test_unknown_names_are_value_errors_listing_the_known(lookup, message) -> None:
    with pytest.raises(ValueError, match=message):
        lookup()


def test_kind_is_a_deprecated_name_of_conv() -> None:
    with pytest.warns(DeprecationWarning, match=r"create_conv2d: the keyword kind= is deprecated, use conv="):
        layer = create_conv2d(kind="fmd", in_channels=4, out_channels=6, kernel_size=3)
    assert isinstance(layer, FMDConv2d)
    with pytest.warns(DeprecationWarning, match="use conv="):
        linear = DynamicLinear(4, 3, kind="dy", kernel_num=2)
    assert linear.method == "dy" and linear(torch.randn(2, 4)).shape == (2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert DynamicLinear(4, 3, conv="fmd").method == "fmd"
        assert isinstance(create_conv2d(conv="od", in_channels=4, out_channels=4, kernel_size=1), nn.Module)
    with pytest.raises(TypeError, match="pass conv= only"):
        create_conv2d(conv="od", kind="od", in_channels=4, out_channels=4, kernel_size=1)
    with pytest.raises(
        ValueError, match=r"the conv kind must be a dynamic method \(cond, .*, kw\), got 'static'"
    ):
        DynamicLinear(4, 3, conv="static")
    with pytest.raises(ValueError, match="a dcd classifier takes no kernel_attention"):
        DynamicLinear(4, 3, conv="dcd")(torch.randn(2, 4), torch.ones(2, 4))


SMALL = {"num_classes": 3, "width": 0.0625, "stem": "cifar"}


@pytest.mark.parametrize("method", ["static", "se", "cbam", "eca"])
def test_attention_init_is_refused_where_there_is_no_attention_path(method: str) -> None:
    with pytest.raises(ValueError, match=r"conv='static' takes no dynamic options, got \['attention_init'\]"):
        create_model("resnet18", **method_options(method), attention_init="authors", **SMALL)


def test_an_option_of_another_method_names_the_method_and_its_accepted_options() -> None:
    with pytest.raises(
        ValueError, match=r"attention_init apply to conv='cond' or .* or conv='fd' only, got "
    ):
        create_model("resnet18", conv="kw", attention_init="authors", **SMALL)
    with pytest.raises(ValueError, match=r"KernelWarehouse's options: kw_ratio, cell_num_ratio, "):
        create_model("resnet18", conv="kw", gate_temperature=2.0, **SMALL)
    with pytest.raises(
        ValueError, match=r"latent_dim apply to conv='dcd' only, got conv='fmd'; FMDConv's options: "
    ):
        create_model("resnet18", conv="fmd", latent_dim=4, **SMALL)
    with pytest.raises(
        ValueError, match=r"conv='od' \(ODConv\) has no option colour; its options: reduction, "
    ):
        create_model("resnet18", conv="od", colour=1, **SMALL)
    # What each method does take still builds.
    for conv in ("cond", "dy", "od", "fmd", "dcd", "fd"):
        create_model("resnet18", conv=conv, attention_init="authors", **SMALL)
    create_model("resnet18", conv="kw", kw_ratio=0.5, reduction=0.125, **SMALL)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"conv": "static"},
            r"attention_init='authors' does nothing for conv='static' \(Static\): only cond, ",
        ),
        ({"conv": "static", "attention": "se"}, "for conv='static' with attention='se'"),
        ({"conv": "kw"}, r"conv='kw' \(KernelWarehouse\): only cond, dy, od, fmd, dcd, fd take it"),
    ],
)
def test_a_recipe_refuses_attention_init_where_it_does_nothing(settings, message) -> None:
    with pytest.raises(ValueError, match=message):
        Recipe(attention_init="authors", **settings)
    assert Recipe(**settings).attention_init == "zero"


def test_recipes_keep_attention_init_where_the_method_takes_it_and_old_runs_load() -> None:
    assert Recipe(conv="dcd", attention_init="authors").attention_init == "authors"
    # A run saved before the setting existed was trained with the authors' init, where there was one.
    assert saved_recipe({"conv": "fmd"}).attention_init == "authors"
    assert saved_recipe({"conv": "static", "attention": "eca"}).attention_init == "zero"
    assert saved_recipe({"conv": "kw"}).attention_init == "zero"


def test_the_backbones_call_their_factory_factory_and_still_take_conv() -> None:
    with pytest.warns(DeprecationWarning, match="MobileNetV2.__init__: the keyword conv= is deprecated"):
        model = MobileNetV2(conv=ConvFactory("static"), num_classes=3, width=0.25)
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in MobileNetV2(factory=ConvFactory("static"), num_classes=3, width=0.25).parameters()
    )
    with pytest.raises(
        ValueError, match=r"conv='kw' layers are made by its backbone builder, which takes kw_ratio"
    ):
        ConvFactory("kw", reduction=0.5)


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--conv", "static", "--attention-init", "authors"],
        ["compare", "--methods", "dcd", "se", "--attention-init", "authors"],
    ],
)
def test_the_command_line_refuses_attention_init_before_any_run(command, tmp_path, capsys) -> None:
    assert main([*command, "--epochs", "1", "--subset", "8", "--out", str(tmp_path / "run")]) != 0
    assert "attention_init='authors' does nothing for conv='static'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
