"""Grad-CAM++ per attention (the FMDConv paper's Figure 4): variants, restored state, layers, grid, inputs."""

import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fmdconv.cli import cam as cam_command
from fmdconv.explain import (
    attention_state,
    default_target_layer,
    explain_attentions,
    find_layer,
    images_from_dataset,
    images_from_files,
    model_attentions,
    save_attention_grid,
)
from fmdconv.explain.gradcam import normalise_per_image
from fmdconv.layers import FMDConv2d, ODConv2d, dynamic_layers, set_attentions, set_temperature
from fmdconv.train import build_model
from fmdconv.train.checkpoint import save_checkpoint
from fmdconv.train.recipe import Recipe

IMAGES = torch.randn(3, 3, 12, 12)


def block(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU())


def tiny_model(conv: type[nn.Module] = FMDConv2d) -> nn.Sequential:
    """A static stem, two dynamic blocks (modules "1" and "2"), then pooling and a classifier."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        block(conv(8, 16, 3, padding=1), 16),
        block(conv(16, 16, 3, padding=1), 16),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )
    set_temperature(model, gate=1.0, kernel=1.0)  # sharp attentions, so the variants differ
    return model


def grad_cam_plus_plus(model: nn.Module, layer: nn.Module, images: torch.Tensor, targets: torch.Tensor):
    """Grad-CAM++ written out (Chattopadhay et al. 2018, the exp-score closed form), in eval mode:
    alpha = g^2 / (2 g^2 + g^3 sum(A)), w = sum(alpha relu(g)), relu(sum_k w_k A_k), bilinear
    upsampling, min-max normalisation per image."""
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    was_training = model.training
    try:
        logits = model.eval()(images)
    finally:
        handle.remove()
        model.train(was_training)
    (activations,) = captured
    (g,) = torch.autograd.grad(logits[torch.arange(len(targets)), targets].sum(), activations)
    a = activations.detach()
    denominator = 2 * g**2 + g**3 * a.sum((2, 3), keepdim=True)
    alpha = torch.where(denominator != 0, g**2 / torch.where(denominator != 0, denominator, 1), 0)
    weights = (alpha * g.clamp(min=0)).sum((2, 3))
    cam = (weights[:, :, None, None] * a).sum(1).clamp(min=0)
    cam = F.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    low, high = cam.amin((1, 2), keepdim=True), cam.amax((1, 2), keepdim=True)
    return torch.where(high > low, (cam - low) / (high - low).clamp(min=1e-12), 0)


def figure_grid(figure) -> tuple[int, int]:
    """(rows, columns) of a figure's subplot grid, checking that every cell holds one axes."""
    shapes = {axes.get_subplotspec().get_geometry()[:2] for axes in figure.axes}
    assert len(shapes) == 1
    rows, columns = shapes.pop()
    assert len(figure.axes) == rows * columns
    return rows, columns


def disabled(model: nn.Module) -> list[set[str]]:
    return [set(layer.disabled_attentions) for layer in dynamic_layers(model)]


def test_model_attentions_follow_figure_4_order() -> None:
    assert model_attentions(tiny_model(FMDConv2d)) == ("input", "kernel", "output")
    assert model_attentions(tiny_model(ODConv2d)) == ("input", "kernel", "output", "spatial")
    with pytest.raises(ValueError, match="no dynamic convolution"):
        model_attentions(nn.Sequential(nn.Conv2d(3, 3, 1)))


def test_default_target_layer_is_the_last_dynamic_block() -> None:
    assert default_target_layer(tiny_model()) == "2"
    flat = nn.Sequential(FMDConv2d(3, 8, 3), nn.ReLU(), FMDConv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1))
    assert default_target_layer(flat) == "2"
    with pytest.raises(ValueError, match="no dynamic convolution"):
        default_target_layer(nn.Sequential(nn.Conv2d(3, 3, 1)))


def test_bad_layer_name_lists_the_valid_names() -> None:
    model = tiny_model()
    assert find_layer(model, "1.0") is model[1][0]
    with pytest.raises(ValueError, match=r"'layer9'.*Valid names: 0, 1, 1\.0, ") as error:
        explain_attentions(model, IMAGES, layer="layer9")
    assert "2.0.gate" not in str(error.value)  # attention paths output vectors, not feature maps


def test_each_variant_is_gradcam_with_only_that_attention_and_the_state_comes_back() -> None:
    model = tiny_model()
    model[1][0].disabled_attentions.add("output")  # an ablation already in force must survive
    before = disabled(model)

    result = explain_attentions(model, IMAGES)

    assert disabled(model) == before
    assert result.variants == ("input", "kernel", "output", "all")
    assert result.layer == "2"
    assert result.cams.shape == (4, 3, 12, 12)
    assert float(result.cams.min()) >= 0 and float(result.cams.max()) <= 1

    def reference(**enabled: bool) -> torch.Tensor:
        with attention_state(model, **enabled):
            return grad_cam_plus_plus(model, model[2], IMAGES, result.targets)

    everything = {"input": True, "kernel": True, "output": True}
    with attention_state(model, **everything), torch.no_grad():
        model.eval()
        assert torch.equal(result.targets, model(IMAGES).argmax(1))  # the class predicted with all on
    torch.testing.assert_close(result.cams[3], reference(**everything))
    torch.testing.assert_close(result.cams[0], reference(input=True, kernel=False, output=False))
    torch.testing.assert_close(result.cams[1], reference(input=False, kernel=True, output=False))
    torch.testing.assert_close(result.cams[2], reference(input=False, kernel=False, output=True))
    assert not torch.allclose(result.cams[0], result.cams[1])
    assert disabled(model) == before


def test_state_comes_back_after_an_error_and_attention_subsets_are_checked() -> None:
    model = tiny_model()
    set_attentions(model, kernel=False)
    before = disabled(model)
    with pytest.raises(ValueError, match="class indices"):
        explain_attentions(model, IMAGES, target=7)
    assert disabled(model) == before
    with pytest.raises(ValueError, match=r"subset of this model's \['input', 'kernel', 'output'\]"):
        explain_attentions(model, IMAGES, attentions=["spatial"])
    result = explain_attentions(model, IMAGES, target=1, attentions=["kernel"])
    assert result.variants == ("kernel", "all")
    assert result.targets.tolist() == [1, 1, 1]


def test_grid_png_has_the_original_and_one_column_per_variant(tmp_path, saved_figures) -> None:
    result = explain_attentions(tiny_model(), IMAGES)
    pictures = torch.rand(3, 3, 12, 12)
    out = save_attention_grid(result, pictures, ["a", "b", "c"], tmp_path / "grid.png", display_size=48)
    with Image.open(out) as image:
        assert image.format == "PNG"
    (figure,) = saved_figures
    assert figure_grid(figure) == (3, 5)  # one row per image: the original, then 4 variants
    titles = [axes.get_title() for axes in figure.axes[:5]]
    assert titles == ["Original", "Input attention", "Kernel attention", "Output attention", "All attentions"]
    assert [figure.axes[5 * row].get_ylabel() for row in range(3)] == ["a", "b", "c"]
    originals = [torch.from_numpy(figure.axes[5 * row].get_images()[0].get_array().data) for row in range(3)]
    for shown, picture in zip(originals, pictures, strict=True):  # drawn enlarged to 48 x 48
        assert shown.shape == (48, 48, 3)
        torch.testing.assert_close(shown.mean(), picture.mean(), atol=0.02, rtol=0)
    with pytest.raises(ValueError, match=r"pictures must have shape \(3, C, 12, 12\)"):
        save_attention_grid(result, torch.rand(2, 3, 12, 12), ["a", "b"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="display_size"):
        save_attention_grid(
            result, torch.rand(3, 3, 12, 12), ["a", "b", "c"], tmp_path / "bad.png", display_size=0
        )


def test_images_from_files_are_squared_scaled_and_normalised(tmp_path) -> None:
    rng = np.random.default_rng(0)
    png, jpeg = tmp_path / "wide.png", tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(png)
    Image.fromarray(rng.integers(0, 256, (50, 50), dtype=np.uint8), mode="L").save(jpeg)

    colour = images_from_files([png, jpeg], "synthetic")  # RGB, 32x32, mean 0.5, std 0.3
    assert colour.inputs.shape == colour.pictures.shape == (2, 3, 32, 32)
    assert colour.names == ("wide.png", "photo.jpg") and colour.labels == (None, None)
    torch.testing.assert_close(colour.inputs, (colour.pictures - 0.5) / 0.3)

    grey = images_from_files([png], "fashion_mnist", image_size=20)
    assert grey.pictures.shape == (1, 1, 20, 20)
    assert float(grey.pictures.min()) >= 0 and float(grey.pictures.max()) <= 1

    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        images_from_files([tmp_path / "missing.png"], "synthetic")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="could not be read by Pillow"):
        images_from_files([tmp_path / "notes.txt"], "synthetic")


def test_images_from_the_synthetic_dataset_undo_the_normalisation() -> None:
    batch = images_from_dataset("synthetic", 3)
    assert batch.inputs.shape == (3, 3, 32, 32)
    assert batch.labels == (0, 1, 2) and batch.names == ("test #0", "test #1", "test #2")
    torch.testing.assert_close(batch.pictures, (batch.inputs * 0.3 + 0.5).clamp(0, 1))
    with pytest.raises(ValueError, match="count must be a positive int"):
        images_from_dataset("synthetic", 0)


def cam_main(argv: list[str]) -> int:
    """Run ``fmdconv cam`` through its own parser (the sub-command registered alone)."""
    parser = argparse.ArgumentParser(prog="fmdconv")
    cam_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def test_cam_command_draws_files_and_dataset_images_from_a_checkpoint(
    tmp_path, capsys, saved_figures
) -> None:
    recipe = Recipe(model="mobilenet_v2", width=0.25, stem="cifar", dataset="synthetic", image_size=32)
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(checkpoint, {"model": build_model(recipe).state_dict(), "recipe": recipe.to_dict()})
    picture = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 40, 3), 200, dtype=np.uint8)).save(picture)
    out = tmp_path / "grid.png"

    code = cam_main(["cam", str(checkpoint), str(picture), "--from-dataset", "2", "--out", str(out)])

    assert code == 0, capsys.readouterr().err
    assert (
        "layer features.18 (2x2 maps, the last dynamic block with maps larger than 1x1), columns input, "
        "kernel, output, all" in capsys.readouterr().err
    )
    (figure,) = saved_figures
    assert figure_grid(figure) == (3, 5)  # the file and 2 dataset images; the original and 4 variants
    assert (
        cam_main(["cam", str(checkpoint), "--from-dataset", "1", "--layer", "head", "--out", str(out)]) == 2
    )
    assert "Valid names: features, features.0, " in capsys.readouterr().err
    assert cam_main(["cam", str(checkpoint), "--out", str(out)]) == 2
    assert "give image files, --from-dataset N, or both" in capsys.readouterr().err


def test_a_flat_map_comes_out_as_zeros_not_as_stretched_rounding() -> None:
    """A map constant up to float rounding gives zeros, not its noise scaled to [0, 1]."""
    noisy = 0.7 * (1 + 1e-6 * torch.randn(1, 4, 4))
    assert noisy.max() > noisy.min()
    assert torch.equal(normalise_per_image(noisy), torch.zeros(1, 4, 4))
    contrast = torch.tensor([[[0.2, 0.4], [0.6, 0.2]]])
    torch.testing.assert_close(normalise_per_image(contrast), torch.tensor([[[0.0, 0.5], [1.0, 0.0]]]))


def test_the_default_layer_is_the_last_with_maps_larger_than_1x1_and_the_command_says_so(
    tmp_path, capsys
) -> None:
    # ResNet-18 with the ImageNet stem on 28x28 images: layer4's maps are 1x1, layer3's 2x2.
    recipe = Recipe(width=0.125, stem="imagenet", dataset="synthetic", image_size=28, kernel_num=2)
    model = build_model(recipe).eval()
    images = torch.randn(2, 3, 28, 28)
    assert default_target_layer(model) == "layer4.1"
    assert default_target_layer(model, images) == "layer3.1"
    result = explain_attentions(model, images)
    assert (result.layer, result.map_size) == ("layer3.1", (2, 2))
    flat = explain_attentions(model, images, layer="layer4.1")
    assert flat.map_size == (1, 1) and torch.equal(flat.cams, torch.zeros_like(flat.cams))

    checkpoint = tmp_path / "last.pt"
    save_checkpoint(checkpoint, {"model": model.state_dict(), "recipe": recipe.to_dict()})
    out = tmp_path / "grid.png"
    assert cam_main(["cam", str(checkpoint), "--from-dataset", "1", "--out", str(out)]) == 0
    assert (
        "layer layer3.1 (2x2 maps, the last dynamic block with maps larger than 1x1 (layer4.1's are 1x1 "
        "at this input size))" in capsys.readouterr().err
    )
    assert (
        cam_main(["cam", str(checkpoint), "--from-dataset", "1", "--layer", "layer4.1", "--out", str(out)])
        == 0
    )
    assert "warning: layer layer4.1's maps are 1x1 at this input size" in capsys.readouterr().err


@pytest.mark.parametrize("out", ["folder", "file/grid.png"])
def test_cam_out_must_be_a_writable_file_name(tmp_path, capsys, out) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        cam_main(["cam", str(tmp_path / "best.pt"), "--from-dataset", "1", "--out", str(tmp_path / out)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "argument --out:" in error and ("is a folder" in error or "file is a file, not a folder" in error)
