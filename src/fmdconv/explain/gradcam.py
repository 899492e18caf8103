"""Grad-CAM++ class activation maps (Chattopadhay et al., WACV 2018) and heat-map overlays.

For a class score ``y`` (a logit, before softmax) and the feature maps ``A`` of shape ``(K, h, w)``
produced by a chosen layer, with ``g = dy/dA`` from one backward pass:

    alpha_kij = g_kij² / (2 g_kij² + g_kij³ · Σ_ab A_kab)        (0 where the denominator is 0)
    w_k       = Σ_ij alpha_kij · relu(g_kij)
    cam_ij    = relu(Σ_k w_k A_kij)

This is the paper's closed form for an exponential score ``exp(y)``, written with first-order
gradients of ``y`` only, as in the common implementations. The map is then upsampled (bilinear) to
the input size and min-max normalised to ``[0, 1]`` per image. A map without spread (a constant
map, as every 1x1 feature map gives, up to float rounding) carries no location: it comes out as
zeros rather than as its rounding noise stretched to ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Target = int | Sequence[int] | Tensor | None
# A map whose max - min is at most this fraction of its largest value is flat: float rounding
# (relative 1e-7 in float32) stays far below it, any real contrast far above.
FLAT_MAP_SPREAD = 1e-4


@dataclass(frozen=True)
class GradCAMResult:
    """Everything one Grad-CAM++ pass computed, for inspection and tests.

    Attributes:
        targets: class explained for each image, shape ``(B,)``.
        activations: feature maps ``A`` of the target layer, shape ``(B, K, h, w)``.
        gradients: ``d score / d A``, shape ``(B, K, h, w)``.
        weights: Grad-CAM++ channel weights ``w_k``, shape ``(B, K)``.
        raw_cam: ``relu(Σ_k w_k A_k)`` at the layer's resolution, shape ``(B, h, w)``.
        cam: ``raw_cam`` upsampled to the input size and min-max normalised per image to ``[0, 1]``
            (a map whose spread is below :data:`FLAT_MAP_SPREAD` of its magnitude, e.g. a constant
            or 1x1 one, gives zeros), shape ``(B, H, W)``.
    """

    targets: Tensor
    activations: Tensor
    gradients: Tensor
    weights: Tensor
    raw_cam: Tensor
    cam: Tensor


class GradCAMPlusPlus:
    """Grad-CAM++ maps of a classifier, taken at one of its layers.

    The constructor registers a forward hook on ``target_layer`` that records its output while a map
    is being computed; the gradient of the class score with respect to that output comes from
    :func:`torch.autograd.grad`, so nothing is accumulated into the parameters' ``.grad``. Drop the
    hook with :meth:`remove`, or use the object as a context manager::

        with GradCAMPlusPlus(model, model.layer4) as cam:
            maps = cam(images)  # (B, H, W) in [0, 1], for the predicted classes

    The model runs in evaluation mode during the pass (no dropout, batch-norm running statistics
    used and left unchanged); each module's training flag is restored afterwards.

    Args:
        model: classifier returning logits of shape ``(B, num_classes)``.
        target_layer: submodule of ``model`` that runs exactly once per forward pass and returns a
            tensor of shape ``(B, K, h, w)``; usually the last convolutional stage.
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module) -> None:
        if not any(module is target_layer for module in model.modules()):
            raise ValueError("target_layer must be a submodule of model")
        self.model = model
        self.target_layer = target_layer
        self._recording = False
        self._captured: list[Tensor] = []
        self._hook: torch.utils.hooks.RemovableHandle | None = target_layer.register_forward_hook(
            self._capture
        )

    def _capture(self, module: nn.Module, inputs: tuple[object, ...], output: object) -> None:
        if self._recording:
            if not isinstance(output, Tensor) or output.ndim != 4:
                raise ValueError("target_layer must return a tensor of shape (B, K, h, w)")
            self._captured.append(output)

    def remove(self) -> None:
        """Remove the hook from ``target_layer``; calling it again does nothing."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()

    def __call__(self, x: Tensor, target: Target = None) -> Tensor:
        """Grad-CAM++ maps of shape ``(B, H, W)`` in ``[0, 1]``; see :meth:`explain` for the arguments."""
        return self.explain(x, target).cam

    def explain(self, x: Tensor, target: Target = None) -> GradCAMResult:
        """Compute Grad-CAM++ for a batch and return every intermediate.

        Args:
            x: input batch of shape ``(B, C, H, W)``; it is not modified.
            target: class to explain: ``None`` for each image's predicted class, an ``int`` for the
                same class in every image, or one class per image as a sequence or tensor of
                length ``B``.

        Returns:
            The maps and their intermediates; ``.cam`` is what :meth:`__call__` returns.

        Raises:
            RuntimeError: if the hook was removed.
            ValueError: on a bad input or target, or a target layer that did not run exactly once
                or that the class score does not depend on.
        """
        if self._hook is None:
            raise RuntimeError("the Grad-CAM++ hook was removed; create a new GradCAMPlusPlus")
        if x.ndim != 4 or not x.is_floating_point():
            raise ValueError(
                f"x must be a float tensor of shape (B, C, H, W); got {x.dtype} {tuple(x.shape)}"
            )
        targets, activations, gradients = self._activations_and_gradients(x, target)
        weights = _grad_cam_plus_plus_weights(activations, gradients)
        raw_cam = F.relu(torch.einsum("bk,bkhw->bhw", weights, activations))
        upsampled = F.interpolate(
            raw_cam.unsqueeze(1), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        return GradCAMResult(
            targets=targets,
            activations=activations,
            gradients=gradients,
            weights=weights,
            raw_cam=raw_cam,
            cam=normalise_per_image(upsampled.squeeze(1)),
        )

    def _activations_and_gradients(self, x: Tensor, target: Target) -> tuple[Tensor, Tensor, Tensor]:
        """Run the model once and return the targets, ``A`` and ``d score / d A``, all detached."""
        inputs = x.detach().requires_grad_(True)  # gives the layer's output a graph with frozen params
        self._captured.clear()
        self._recording = True
        try:
            with torch.enable_grad(), evaluation_mode(self.model):
                logits = self.model(inputs)
                activations = self._single_capture()
                if not isinstance(logits, Tensor) or logits.ndim != 2:
                    raise ValueError("model must return logits of shape (B, num_classes)")
                targets = _resolve_targets(target, logits)
                score = logits.gather(1, targets.unsqueeze(1)).sum()  # images are independent in eval mode
                gradients = _gradient(score, activations)
        finally:
            self._recording = False
            self._captured.clear()
        return targets, activations.detach(), gradients

    def _single_capture(self) -> Tensor:
        if len(self._captured) != 1:
            raise ValueError(
                f"target_layer ran {len(self._captured)} times in one forward pass; "
                "pick a layer that runs exactly once"
            )
        return self._captured[0]


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Put every module of ``model`` in eval mode inside a ``with`` block, then restore each one's."""
    training_flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in training_flags:
            module.training = training


def _resolve_targets(target: Target, logits: Tensor) -> Tensor:
    batch_size, num_classes = logits.shape
    if target is None:
        return logits.detach().argmax(dim=1)
    try:
        targets = torch.as_tensor(target, device=logits.device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"target must be None, an int, or a sequence of ints; got {target!r}") from error
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices; got {targets.dtype}")
    if targets.ndim == 0:
        targets = targets.expand(batch_size)
    if targets.shape != (batch_size,):
        raise ValueError(
            f"target must give one class per image ({batch_size}); got shape {tuple(targets.shape)}"
        )
    if targets.min() < 0 or targets.max() >= num_classes:
        raise ValueError(f"target must be class indices in [0, {num_classes}); got {targets.tolist()}")
    return targets.long()


def _gradient(score: Tensor, activations: Tensor) -> Tensor:
    if not activations.requires_grad:
        raise ValueError("target_layer's output has no gradient; it must not run under torch.no_grad()")
    (gradient,) = torch.autograd.grad(score, activations, allow_unused=True)
    if gradient is None:
        raise ValueError("the model's output does not depend on target_layer's output")
    return gradient


def _grad_cam_plus_plus_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    gradients_squared = gradients.pow(2)
    denominator = 2 * gradients_squared + activations.sum(dim=(2, 3), keepdim=True) * gradients.pow(3)
    defined = denominator != 0
    alpha = torch.where(defined, gradients_squared / denominator.where(defined, 1), 0)
    return (alpha * F.relu(gradients)).sum(dim=(2, 3))


def normalise_per_image(maps: Tensor) -> Tensor:
    """Min-max normalise each map to [0, 1]; a flat map (see :data:`FLAT_MAP_SPREAD`) becomes zeros."""
    flat = maps.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    without_spread = span <= FLAT_MAP_SPREAD * flat.abs().amax(dim=1, keepdim=True)
    normalised = (flat - low) / span.where(without_spread.logical_not(), 1)
    return normalised.masked_fill(without_spread, 0).view_as(maps)


def overlay_heatmap(image: Tensor, cam: Tensor, alpha: float = 0.5, colormap: str = "jet") -> Tensor:
    """Blend a class activation map, coloured with a colormap, over an image.

    Args:
        image: grey ``(1, H, W)`` or RGB ``(3, H, W)`` floating-point image with values in ``[0, 1]``.
        cam: map of shape ``(H, W)`` with values in ``[0, 1]``, such as one image of
            :meth:`GradCAMPlusPlus.__call__`.
        alpha: weight of the heat map, in ``[0, 1]`` (0 gives the image, 1 the heat map alone).
        colormap: name of a matplotlib colormap, for example ``"jet"`` or ``"viridis"``.

    Returns:
        RGB image ``(1 - alpha) · image + alpha · colormap(cam)`` of shape ``(3, H, W)`` in
        ``[0, 1]``, with the dtype and device of ``image``.
    """
    if image.ndim != 3 or image.shape[0] not in (1, 3) or not image.is_floating_point():
        raise ValueError(
            f"image must be a float tensor of shape (1, H, W) or (3, H, W); got {image.dtype} "
            f"{tuple(image.shape)}"
        )
    if cam.shape != image.shape[1:]:
        raise ValueError(
            f"cam must have shape {tuple(image.shape[1:])} (the image's H, W); got {tuple(cam.shape)}"
        )
    for name, values in (("image", image), ("cam", cam)):
        if not bool(((values >= 0) & (values <= 1)).all()):
            raise ValueError(f"{name} values must be in [0, 1]")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    import matplotlib  # loaded when an overlay is drawn, not on import of fmdconv.explain

    if colormap not in matplotlib.colormaps:
        raise ValueError(
            f"colormap must be a matplotlib colormap name such as 'jet' or 'viridis'; got {colormap!r}"
        )
    colours = matplotlib.colormaps[colormap](cam.detach().cpu().numpy())[..., :3]
    heat = torch.from_numpy(colours).permute(2, 0, 1).to(dtype=image.dtype, device=image.device)
    return (1 - alpha) * image.expand(3, -1, -1) + alpha * heat
