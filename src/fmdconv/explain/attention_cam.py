"""Grad-CAM++ maps of a dynamic model with one attention at a time (the FMDConv paper's Figure 4).

Figure 4 of the FMDConv paper shows, for each image, the original and the Grad-CAM++ maps of the
features "with input attention", "with temperature-degraded kernel attention", "with output
attention" and "with all combined attentions". Here every column is one *attention variant* of the
same trained model, switched without rebuilding it through :func:`fmdconv.layers.set_attentions`:

- ``"<name>"`` (e.g. ``"input"``): that attention enabled in every dynamic layer, the model's other
  attentions disabled. A disabled attention counts as 1 in the layer's formula (docs/design.md, section 1):
  disabled input/output/spatial gates leave the feature map or kernel unscaled, and a disabled
  softmax kernel attention gives the plain *sum* of the n kernels.
- ``"all"``: every attention of the model enabled.

The maps explain the same class in every column: by default each image's class predicted with all
attentions enabled. The model's attention switches (``disabled_attentions`` of each layer) are
restored afterwards, whatever they were, even when an error is raised.

The default target layer is the output of the model's *last dynamic block*: the last module, in
``model.named_modules()`` order, that holds a dynamic convolution inside it (``layer4.1`` of a
ResNet-18, ``features.18`` of a MobileNetV2); a model whose dynamic convolutions are direct children
of the model itself uses its last dynamic convolution. Given the images, it is the last such block
whose maps are larger than 1x1 for them: a 1x1 map is constant, and so locates nothing (ResNet-18
with the ImageNet stem on 28x28 images has 1x1 maps in ``layer4``). Any module can be chosen by name
instead; :attr:`AttentionCAMs.map_size` tells how large its maps were.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from fmdconv.explain.gradcam import GradCAMPlusPlus, Target, evaluation_mode, overlay_heatmap
from fmdconv.layers import DynamicConv2d, dynamic_layers, set_attentions

ALL_ATTENTIONS = "all"
NO_DYNAMIC_LAYER = "model has no dynamic convolution (DynamicConv2d), so no attention to switch"
# Figure 4's column order; ODConv's spatial attention, absent from FMDConv, comes last.
ATTENTION_ORDER = ("input", "kernel", "output", "spatial")
COLUMN_LABELS = {
    "original": "Original",
    "input": "Input attention",
    "kernel": "Kernel attention",
    "output": "Output attention",
    "spatial": "Spatial attention",
    ALL_ATTENTIONS: "All attentions",
}


@dataclass(frozen=True)
class AttentionCAMs:
    """Grad-CAM++ maps of one batch under each attention variant.

    Attributes:
        variants: the variants, in column order: attention names, then ``"all"``.
        cams: maps of shape ``(V, B, H, W)`` in ``[0, 1]``, ``cams[v]`` for ``variants[v]``.
        targets: the class explained for each image, shape ``(B,)``, the same in every variant.
        layer: name of the target layer in ``model.named_modules()``.
        map_size: (height, width) of that layer's feature maps, before upsampling; at 1x1 every
            map is constant and comes out as zeros.
    """

    variants: tuple[str, ...]
    cams: Tensor
    targets: Tensor
    layer: str
    map_size: tuple[int, int]


def model_attentions(model: nn.Module) -> tuple[str, ...]:
    """The attentions the dynamic layers of ``model`` compute, in Figure 4's order.

    Raises:
        ValueError: ``model`` has no dynamic convolution.
    """
    layers = dynamic_layers(model)
    if not layers:
        raise ValueError(NO_DYNAMIC_LAYER)
    present = {name for layer in layers for name in layer.available_attentions}
    return tuple(name for name in ATTENTION_ORDER if name in present)


@contextmanager
def attention_state(model: nn.Module, **enabled: bool) -> Iterator[None]:
    """Switch attentions on or off (as :func:`set_attentions`) inside a ``with`` block only.

    On leaving, every dynamic layer gets back exactly the attentions it had disabled before.
    """
    saved = [(layer, set(layer.disabled_attentions)) for layer in dynamic_layers(model)]
    try:
        set_attentions(model, **enabled)
        yield
    finally:
        for layer, disabled in saved:
            layer.disabled_attentions = disabled


def default_target_layer(model: nn.Module, images: Tensor | None = None) -> str:
    """Name of the last dynamic block of ``model`` (see the module docstring for the rule).

    With ``images`` (a batch the model takes), the last dynamic block whose output maps are larger
    than 1x1 for them (the last one if every block's maps are 1x1).

    Raises:
        ValueError: ``model`` has no dynamic convolution.
    """
    dynamic, blocks = [], []
    for name, module in model.named_modules():
        if isinstance(module, DynamicConv2d):
            dynamic.append(name)
        elif name and any(isinstance(inner, DynamicConv2d) for inner in module.modules()):
            blocks.append(name)
    if not dynamic:
        raise ValueError(NO_DYNAMIC_LAYER)
    candidates = blocks or dynamic
    if images is None:
        return candidates[-1]
    sizes = map_sizes(model, images[:1], candidates)
    larger = [name for name in candidates if sizes[name] is not None and sizes[name] != (1, 1)]
    return larger[-1] if larger else candidates[-1]


def map_sizes(model: nn.Module, images: Tensor, names: Sequence[str]) -> dict[str, tuple[int, int] | None]:
    """(height, width) of the output of each module named in ``names`` for ``images``, in eval mode;
    None for a module whose output is not a (B, C, H, W) tensor or that did not run exactly once."""
    seen: dict[str, list[tuple[int, ...] | None]] = {name: [] for name in names}
    handles: list[RemovableHandle] = []
    for name in names:

        def record(_module: nn.Module, _inputs: object, output: object, name: str = name) -> None:
            shape = tuple(output.shape) if isinstance(output, Tensor) and output.ndim == 4 else None
            seen[name].append(shape)

        handles.append(find_layer(model, name).register_forward_hook(record))
    try:
        with torch.no_grad(), evaluation_mode(model):
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return {
        name: (shapes[0][-2], shapes[0][-1]) if len(shapes) == 1 and shapes[0] is not None else None
        for name, shapes in seen.items()
    }


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule of ``model`` called ``name`` in ``model.named_modules()``.

    The attention paths inside a dynamic convolution are not valid targets (they output attention
    vectors, not feature maps).

    Raises:
        ValueError: no valid submodule has that name; the message lists the valid names.
    """
    modules: dict[str, nn.Module] = {}
    inside_dynamic: list[str] = []
    for module_name, module in model.named_modules():
        if not module_name or any(module_name.startswith(f"{outer}.") for outer in inside_dynamic):
            continue
        modules[module_name] = module
        if isinstance(module, DynamicConv2d):
            inside_dynamic.append(module_name)
    if name not in modules:
        raise ValueError(
            f"layer must name a submodule of the model; got {name!r}. Valid names: {', '.join(modules)}"
        )
    return modules[name]


def explain_attentions(
    model: nn.Module,
    images: Tensor,
    layer: str | None = None,
    target: Target = None,
    attentions: Sequence[str] | None = None,
) -> AttentionCAMs:
    """Grad-CAM++ maps of ``images`` with each attention alone, then with all of them.

    Args:
        model: a classifier with dynamic convolutions, returning logits ``(B, num_classes)``.
        images: normalised input batch ``(B, C, H, W)``, as the model was trained on.
        layer: name of the target layer (see :func:`find_layer`); ``None`` for the last dynamic
            block whose maps are larger than 1x1 for ``images`` (:func:`default_target_layer`).
        target: class to explain, as in :meth:`GradCAMPlusPlus.explain`; ``None`` for each image's
            class predicted with all attentions enabled.
        attentions: the single-attention variants to show, a subset of :func:`model_attentions`;
            ``None`` for all of them. The ``"all"`` variant always comes last.

    Returns:
        The maps, one ``(B, H, W)`` stack per variant.

    Raises:
        ValueError: no dynamic convolution, an unknown layer name, or an attention the model lacks.
    """
    available = model_attentions(model)
    chosen = available if attentions is None else tuple(attentions)
    unknown = [name for name in chosen if name not in available]
    if unknown or not chosen:
        raise ValueError(
            f"attentions must be a non-empty subset of this model's {list(available)}; got {list(chosen)}"
        )
    layer_name = default_target_layer(model, images) if layer is None else layer
    everything_on = dict.fromkeys(available, True)
    with GradCAMPlusPlus(model, find_layer(model, layer_name)) as cam:
        with attention_state(model, **everything_on):
            combined = cam.explain(images, target)
        map_size = (combined.raw_cam.shape[-2], combined.raw_cam.shape[-1])
        cams = []
        for name in chosen:
            only_this = {other: other == name for other in available}
            with attention_state(model, **only_this):
                cams.append(cam(images, combined.targets))
    return AttentionCAMs(
        variants=(*chosen, ALL_ATTENTIONS),
        cams=torch.stack([*cams, combined.cam]),
        targets=combined.targets,
        layer=layer_name,
        map_size=map_size,
    )


def save_attention_grid(
    result: AttentionCAMs,
    pictures: Tensor,
    row_labels: Sequence[str],
    out: str | Path,
    alpha: float = 0.5,
    display_size: int | None = None,
) -> Path:
    """Write the Figure-4 grid: one row per image; the original, then one overlay per variant.

    Args:
        result: the maps from :func:`explain_attentions`.
        pictures: the images as they should be shown, ``(B, 1 or 3, H, W)`` in ``[0, 1]`` (the
            un-normalised inputs), with the maps' ``H, W``.
        row_labels: one label per image.
        out: path of the PNG (must end in ``.png``); written atomically.
        alpha: weight of the heat map in each overlay, in ``[0, 1]``.
        display_size: side length each picture is resized to (bilinear) before drawing; ``None``
            keeps the input size. Small images (28 pixels) read better enlarged.

    Returns:
        The path written.
    """
    _, batch, height, width = result.cams.shape
    if pictures.ndim != 4 or pictures.shape[0] != batch or tuple(pictures.shape[-2:]) != (height, width):
        raise ValueError(
            f"pictures must have shape ({batch}, C, {height}, {width}) to match the maps; "
            f"got {tuple(pictures.shape)}"
        )
    if display_size is not None and (not isinstance(display_size, int) or display_size < 1):
        raise ValueError(f"display_size must be a positive int or None; got {display_size!r}")
    rows = []
    for index in range(batch):
        picture = pictures[index]
        row = [picture, *(overlay_heatmap(picture, cam[index], alpha) for cam in result.cams)]
        rows.append([_resize_for_display(image, display_size) for image in row])
    columns = [COLUMN_LABELS["original"], *(COLUMN_LABELS[name] for name in result.variants)]
    from fmdconv.viz import save_image_grid  # matplotlib: loaded when a grid is drawn, not on import

    return save_image_grid(rows, row_labels, columns, out)


def _resize_for_display(image: Tensor, size: int | None) -> Tensor:
    if size is None or tuple(image.shape[-2:]) == (size, size):
        return image
    resized = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return resized.clamp(0, 1)
