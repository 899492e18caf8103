"""Grad-CAM++ against a model small enough to differentiate by hand, plus hooks, modes and overlays."""

import pytest
import torch
from torch import nn

from fmdconv.explain import GradCAMPlusPlus, overlay_heatmap

# Hand-checkable model: a 1x1 conv (1 -> 2 channels, no bias) is the target layer, so A_k = c_k · x;
# then global average pooling and a linear layer, so y_c = Σ_k W_ck · mean(A_k) and the gradient is
# constant over space: g_k = W_ck / (h · w).
CONV_WEIGHTS = (1.0, 0.5)
LINEAR_WEIGHTS = ((2.0, -1.0), (0.0, 0.0), (-1.0, 1.0))
IMAGES = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[1.0, 2.0], [3.0, -2.0]]]])  # (2, 1, 2, 2)


def hand_model() -> nn.Sequential:
    conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
    linear = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(CONV_WEIGHTS).view(2, 1, 1, 1))
        linear.weight.copy_(torch.tensor(LINEAR_WEIGHTS))
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)


def test_hand_computed_activations_gradients_weights_and_map() -> None:
    model = hand_model()
    with GradCAMPlusPlus(model, model[0]) as cam:
        result = cam.explain(IMAGES, target=[0, 2])

    x0, x1 = IMAGES[0, 0], IMAGES[1, 0]
    expected_activations = torch.stack([torch.stack([1.0 * x0, 0.5 * x0]), torch.stack([1.0 * x1, 0.5 * x1])])
    torch.testing.assert_close(result.activations, expected_activations)
    # Image 0, class 0: g = (2, -1) / 4; image 1, class 2: g = (-1, 1) / 4.
    expected_gradients = torch.tensor([[0.5, -0.25], [-0.25, 0.25]]).view(2, 2, 1, 1).expand(2, 2, 2, 2)
    torch.testing.assert_close(result.gradients, expected_gradients)

    # alpha = g² / (2 g² + g³ ΣA) and w_k = Σ_ij alpha · relu(g) = 4 · alpha · relu(g_k).
    # Image 0, channel 0: ΣA = 10, alpha = 0.25 / (0.5 + 10 · 0.125) = 1/7, w = 4 · 1/7 · 0.5 = 2/7.
    #   channel 1: g < 0, so w = 0 (its alpha, 0.0625 / (0.125 - 5 · 0.015625) = 4/3, is ignored).
    # Image 1, channel 1: ΣA = 0.5 · 4 = 2, alpha = 0.0625 / (0.125 + 2 · 0.015625) = 0.4,
    #   w = 4 · 0.4 · 0.25 = 0.4; channel 0: g < 0, so w = 0.
    torch.testing.assert_close(result.weights, torch.tensor([[2 / 7, 0.0], [0.0, 0.4]]))

    # cam = relu(Σ_k w_k A_k): image 0 is 2/7 · x0; image 1 is relu(0.4 · 0.5 · x1), the -2 clipped.
    expected_raw = torch.stack([2 / 7 * x0, torch.tensor([[0.2, 0.4], [0.6, 0.0]])])
    torch.testing.assert_close(result.raw_cam, expected_raw)
    # Same size as the input, so upsampling is the identity; min-max normalised per image.
    expected_cam = torch.tensor([[[0.0, 1 / 3], [2 / 3, 1.0]], [[1 / 3, 2 / 3], [1.0, 0.0]]])
    torch.testing.assert_close(result.cam, expected_cam)
    torch.testing.assert_close(cam_of(model, IMAGES, [0, 2]), expected_cam)


def cam_of(model: nn.Module, images: torch.Tensor, target) -> torch.Tensor:
    with GradCAMPlusPlus(model, model[0]) as cam:
        return cam(images, target)


def test_zero_gradient_gives_zero_weights_and_a_zero_map_without_nan() -> None:
    model = hand_model()  # class 1 has all-zero linear weights: g = 0, so the denominator is 0
    with GradCAMPlusPlus(model, model[0]) as cam:
        result = cam.explain(IMAGES, target=1)
    assert torch.equal(result.weights, torch.zeros(2, 2))
    assert torch.equal(result.cam, torch.zeros(2, 2, 2))


def test_constant_positive_map_normalises_to_zeros() -> None:
    model = hand_model()
    flat_images = torch.full((1, 1, 4, 4), 3.0)
    maps = cam_of(model, flat_images, 0)
    assert torch.equal(maps, torch.zeros(1, 4, 4))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (0, [0, 0]),
        (2, [2, 2]),
        ([2, 0], [2, 0]),
        ((1, 2), [1, 2]),
        (torch.tensor([2, 1]), [2, 1]),
        (torch.tensor(2), [2, 2]),
    ],
)
def test_target_forms(target, expected) -> None:
    model = hand_model()
    with GradCAMPlusPlus(model, model[0]) as cam:
        assert cam.explain(IMAGES, target).targets.tolist() == expected


def test_no_target_explains_the_predicted_class() -> None:
    model = hand_model()
    # Logits: image 0 (3.75, 0, -1.25), image 1 (1.5, 0, -0.5): class 0 for both; negated, class 2.
    with GradCAMPlusPlus(model, model[0]) as cam:
        assert cam.explain(IMAGES).targets.tolist() == [0, 0]
        assert cam.explain(-IMAGES).targets.tolist() == [2, 2]
        torch.testing.assert_close(cam(IMAGES), cam(IMAGES, target=0))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (3, r"class indices in \[0, 3\)"),
        ([0, -1], r"class indices in \[0, 3\)"),
        ([0, 1, 2], "one class per image"),
        (torch.tensor([0.0, 1.0]), "integer class indices"),
        (True, "integer class indices"),
        ([True, False], "integer class indices"),
        ("cat", "target must be"),
    ],
)
def test_bad_targets_are_rejected(target, message) -> None:
    model = hand_model()
    with GradCAMPlusPlus(model, model[0]) as cam, pytest.raises(ValueError, match=message):
        cam(IMAGES, target)


class SmallNet(nn.Module):
    """Conv-BN-ReLU feature layer at half resolution, dropout and a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_maps_are_upsampled_to_the_input_and_normalised() -> None:
    torch.manual_seed(0)
    model = SmallNet().eval()
    with GradCAMPlusPlus(model, model.features) as cam:
        result = cam.explain(torch.rand(3, 3, 10, 10), target=[0, 1, 2])
    assert result.raw_cam.shape == (3, 5, 5)
    assert result.cam.shape == (3, 10, 10)
    assert not result.cam.isnan().any()
    for image_map, raw_map in zip(result.cam, result.raw_cam, strict=True):
        if raw_map.max() > raw_map.min():
            assert image_map.min() == 0.0 and image_map.max() == pytest.approx(1.0)


def test_model_modes_statistics_and_gradients_are_left_alone() -> None:
    torch.manual_seed(0)
    model = SmallNet().train()
    model.head[2].eval()  # a mixed-mode model must come back mixed
    training_flags = [module.training for module in model.modules()]
    running_mean = model.features[1].running_mean.clone()
    images = torch.rand(2, 3, 8, 8)
    with GradCAMPlusPlus(model, model.features) as cam:
        maps = cam(images)
        again = cam(images)
        with torch.no_grad():  # the explanation builds its own graph
            under_no_grad = cam(images)
    torch.testing.assert_close(maps, again)  # evaluation mode: no dropout, running statistics
    torch.testing.assert_close(maps, under_no_grad)
    assert [module.training for module in model.modules()] == training_flags
    assert torch.equal(model.features[1].running_mean, running_mean)
    assert all(parameter.grad is None for parameter in model.parameters())
    assert not images.requires_grad


def test_hooks_are_removed_by_the_context_manager_and_by_remove() -> None:
    model = hand_model()
    with GradCAMPlusPlus(model, model[0]) as cam:
        assert len(model[0]._forward_hooks) == 1
    assert len(model[0]._forward_hooks) == 0
    with pytest.raises(RuntimeError, match="hook was removed"):
        cam(IMAGES)

    explainer = GradCAMPlusPlus(model, model[0])
    explainer.remove()
    explainer.remove()  # idempotent
    assert len(model[0]._forward_hooks) == 0


def test_plain_forward_passes_record_nothing() -> None:
    model = hand_model()
    with GradCAMPlusPlus(model, model[0]) as cam:
        model(IMAGES)
        assert cam._captured == []


def test_bad_layers_are_rejected() -> None:
    model = hand_model()
    with pytest.raises(ValueError, match="submodule of model"):
        GradCAMPlusPlus(model, nn.Conv2d(1, 2, 1))
    shared = nn.Conv2d(1, 1, 1)
    twice = nn.Sequential(shared, shared, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with GradCAMPlusPlus(twice, shared) as cam, pytest.raises(ValueError, match="ran 2 times"):
        cam(IMAGES)
    with GradCAMPlusPlus(model, model[2]) as cam, pytest.raises(ValueError, match=r"shape \(B, K, h, w\)"):
        cam(IMAGES)
    with GradCAMPlusPlus(model, model[0]) as cam, pytest.raises(ValueError, match="x must be a float tensor"):
        cam(IMAGES[0])


@pytest.mark.parametrize("channels", [1, 3])
def test_overlay_shapes_range_and_blend(channels: int) -> None:
    torch.manual_seed(0)
    image = torch.rand(channels, 6, 7)
    cam = torch.rand(6, 7)
    overlay = overlay_heatmap(image, cam)
    assert overlay.shape == (3, 6, 7) and overlay.dtype == image.dtype
    assert overlay.min() >= 0 and overlay.max() <= 1
    torch.testing.assert_close(overlay_heatmap(image, cam, alpha=0.0), image.expand(3, -1, -1))
    hot = overlay_heatmap(image, torch.ones(6, 7), alpha=1.0)
    torch.testing.assert_close(hot[:, 0, 0], torch.tensor([0.5, 0.0, 0.0]))  # top of "jet" is dark red


@pytest.mark.parametrize(
    ("image", "cam", "options", "message"),
    [
        (torch.rand(2, 4, 4), torch.rand(4, 4), {}, r"image must be .* \(1, H, W\) or \(3, H, W\)"),
        (torch.zeros(3, 4, 4, dtype=torch.uint8), torch.rand(4, 4), {}, "image must be a float"),
        (torch.rand(3, 4, 4), torch.rand(4, 5), {}, r"cam must have shape \(4, 4\)"),
        (torch.rand(3, 4, 4) * 255, torch.rand(4, 4), {}, r"image values must be in \[0, 1\]"),
        (torch.rand(3, 4, 4), torch.rand(4, 4) + 1, {}, r"cam values must be in \[0, 1\]"),
        (torch.rand(3, 4, 4), torch.rand(4, 4), {"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
        (torch.rand(3, 4, 4), torch.rand(4, 4), {"colormap": "no-such-map"}, "colormap must be"),
    ],
)
def test_overlay_rejects_bad_input(image, cam, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        overlay_heatmap(image, cam, **options)


def test_frozen_parameters_still_give_maps() -> None:
    model = hand_model().requires_grad_(False)
    torch.testing.assert_close(cam_of(model, IMAGES, 0), cam_of(hand_model(), IMAGES, 0))


class SpatialWeightedSum(nn.Module):
    """Score y = Σ_ij M_ij A_ij for fixed M, so the gradient M varies over space."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.mask).sum(dim=(2, 3))


def test_alpha_uses_the_gradient_at_each_position_times_the_sum_of_activations() -> None:
    conv = nn.Conv2d(1, 1, kernel_size=1, bias=False)
    nn.init.ones_(conv.weight)
    model = nn.Sequential(conv, SpatialWeightedSum(torch.tensor([[1.0, 2.0]])))
    # A = (1, 3), g = (1, 2), ΣA = 4: alpha = (1 / (2 + 4 · 1), 4 / (8 + 4 · 8)) = (1/6, 1/10),
    # w = 1/6 · 1 + 1/10 · 2 = 11/30 (summing A · g³ over positions instead would give about 0.175).
    with GradCAMPlusPlus(model, conv) as cam:
        result = cam.explain(torch.tensor([[[[1.0, 3.0]]]]), target=0)
    torch.testing.assert_close(result.gradients, torch.tensor([[[[1.0, 2.0]]]]))
    torch.testing.assert_close(result.weights, torch.tensor([[11 / 30]]))
    torch.testing.assert_close(result.raw_cam, torch.tensor([[[11 / 30, 33 / 30]]]))
