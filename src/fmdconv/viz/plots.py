"""Figures of the FMDConv paper's kind, written as PNG files.

Every function takes plain data, writes one PNG atomically (to a temporary file in the same folder,
then :func:`os.replace`, so a reader never sees half a file) and returns its path. Figures are built
with :class:`matplotlib.figure.Figure` and the Agg renderer, never ``pyplot``: nothing is displayed
and the global matplotlib state is left alone.

Result rows are plain dicts, one per method or setting. Keys used:

==========  ======================================================================================
``method``  name shown for the method, e.g. ``"FMDConv"``
``time``    measured cost, > 0, in the unit given by ``time_unit`` (e.g. seconds per epoch)
``macs``    multiply-accumulates per image, > 0
``top1``    top-1 accuracy as a proportion in ``[0, 1]``
``top5``    top-5 accuracy as a proportion in ``[0, 1]``
``ies``     Inverse Efficiency Score (:func:`fmdconv.metrics.ies`), finite and >= 0
``rcs``     Rate-Correct Score (:func:`fmdconv.metrics.rcs`), finite and >= 0
==========  ======================================================================================

Each function states which keys it needs; other keys are ignored. A missing key or a bad value
raises :class:`ValueError` naming the row and the key.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, PercentFormatter

Row = Mapping[str, Any]
PathLike = str | os.PathLike[str]

_DPI = 150
_PANEL_SIZE = (4.8, 3.6)  # inches per panel of the side-by-side plots
_X_KEYS = ("time", "macs")


def plot_speed_accuracy(
    rows: Sequence[Row], out: PathLike, x: str = "time", time_unit: str = "s/epoch"
) -> Path:
    """Plot top-1 accuracy against time or MACs, one marked and labelled point per method.

    Args:
        rows: dicts with keys ``method``, ``top1`` and ``time`` or ``macs`` (see the module docstring).
        out: path of the PNG to write (must end in ``.png``); missing folders are created.
        x: ``"time"`` to plot against the measured time, ``"macs"`` against MACs per image.
        time_unit: unit of ``time``, shown on the axis.

    Returns:
        The path written.
    """
    if x not in _X_KEYS:
        raise ValueError(f"x must be one of {_X_KEYS}; got {x!r}")
    _require_keys(rows, ("method", "top1", x))
    methods = _labels(rows, "method")
    positions = _column(rows, x, strictly_positive=True)
    top1 = _proportions(rows, "top1")

    figure, (axes,) = _figure(panels=1)
    markers = "osD^vP*Xh<>"
    for index, (method, position, accuracy) in enumerate(zip(methods, positions, top1, strict=True)):
        axes.scatter(position, accuracy, s=60, marker=markers[index % len(markers)], label=method, zorder=3)
    if x == "macs":
        axes.xaxis.set_major_formatter(EngFormatter())
        axes.set_xlabel("MACs per image")
    else:
        axes.set_xlabel(f"Time ({time_unit})")
    axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    axes.set_ylabel("Top-1 accuracy")
    axes.set_title("Speed-accuracy trade-off (up and left is better)")
    axes.margins(0.15)
    axes.grid(alpha=0.3)
    axes.legend(title="Method", fontsize="small")
    return _save(figure, out)


def plot_scores(rows: Sequence[Row], out: PathLike, time_unit: str = "s/epoch") -> Path:
    """Bar charts of IES and RCS per method, side by side (the FMDConv paper's Figure 3 b, c).

    Args:
        rows: dicts with keys ``method``, ``ies`` and ``rcs``, computed from times in ``time_unit``.
        out: path of the PNG to write (must end in ``.png``); missing folders are created.
        time_unit: unit of the times the scores came from; IES is in this unit, RCS in its inverse.

    Returns:
        The path written.
    """
    _require_keys(rows, ("method", "ies", "rcs"))
    methods = _labels(rows, "method")
    scores = _column(rows, "ies"), _column(rows, "rcs")
    per_time = f"({time_unit})⁻¹" if "/" in time_unit else f"{time_unit}⁻¹"

    figure, panels = _figure(panels=2)
    titles = ("Inverse Efficiency Score (lower is better)", "Rate-Correct Score (higher is better)")
    axis_labels = (f"IES = time / top-1 ({time_unit})", f"RCS = top-1 / time ({per_time})")
    for axes, values, title, axis_label in zip(panels, scores, titles, axis_labels, strict=True):
        bars = axes.bar(methods, values, color=[f"C{index}" for index in range(len(methods))], zorder=3)
        axes.bar_label(bars, fmt="%.3g", fontsize="small", padding=2)
        axes.set_title(title, fontsize="medium")
        axes.set_ylabel(axis_label)
        axes.set_xlabel("Method")
        axes.margins(y=0.12)
        axes.grid(axis="y", alpha=0.3)
        axes.tick_params(axis="x", labelrotation=20)
    return _save(figure, out)


def plot_ablation(rows: Sequence[Row], factor: str, out: PathLike, factor_label: str | None = None) -> Path:
    """Top-1 and top-5 accuracy against a varied factor, side by side (the FMDConv paper's Figure 5).

    Args:
        rows: dicts with keys ``factor``, ``top1`` and ``top5``, one per value of the factor, e.g.
            ``{"temperature": 34, "top1": 0.772, "top5": 0.941}``. Numeric factors are sorted and
            placed to scale; other values (e.g. schedule names) keep their order, evenly spaced.
        factor: the key of the varied factor.
        out: path of the PNG to write (must end in ``.png``); missing folders are created.
        factor_label: axis label for the factor; the key itself by default.

    Returns:
        The path written.
    """
    if not isinstance(factor, str) or not factor:
        raise ValueError(f"factor must be the key of the varied setting, a non-empty str; got {factor!r}")
    _require_keys(rows, (factor, "top1", "top5"))
    levels = [row[factor] for row in rows]
    if len(set(map(str, levels))) != len(levels):
        raise ValueError(f"rows must have distinct values of {factor!r}; got {levels}")
    accuracies = _proportions(rows, "top1"), _proportions(rows, "top5")
    numeric = all(_is_number(level) for level in levels)
    order = sorted(range(len(rows)), key=lambda index: levels[index]) if numeric else list(range(len(rows)))
    positions = [float(levels[index]) if numeric else float(place) for place, index in enumerate(order)]

    figure, panels = _figure(panels=2)
    for axes, values, name, colour in zip(panels, accuracies, ("Top-1", "Top-5"), ("C0", "C1"), strict=True):
        ordered = [values[index] for index in order]
        axes.plot(positions, ordered, marker="o", color=colour, zorder=3)
        for position, value in zip(positions, ordered, strict=True):
            axes.annotate(
                f"{value:.2%}",
                (position, value),
                textcoords="offset points",
                xytext=(0, 7),
                ha="center",
                fontsize="small",
            )
        axes.set_xticks(positions, [str(levels[index]) for index in order])
        axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        axes.set_title(f"{name} accuracy", fontsize="medium")
        axes.set_ylabel(f"{name} accuracy")
        axes.set_xlabel(factor_label or factor)
        axes.margins(x=0.08, y=0.25)
        axes.grid(alpha=0.3)
    return _save(figure, out)


def save_image_grid(
    images: Sequence[Sequence[torch.Tensor]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    out: PathLike,
    cell_inches: float = 1.8,
) -> Path:
    """Save a grid of images with labelled rows and columns (the FMDConv paper's Figure 4).

    Typical use: one row per input image; columns "Original", "Input attention", "Kernel attention",
    "Output attention", "All attentions" holding the image and its Grad-CAM++ overlays
    (:func:`fmdconv.explain.overlay_heatmap`).

    Args:
        images: ``images[r][c]`` is the picture at row ``r``, column ``c``: a float tensor of shape
            ``(3, H, W)`` (RGB) or ``(1, H, W)`` (grey) with values in ``[0, 1]``. Every row has one
            picture per column; sizes may differ between pictures.
        row_labels: one label per row, shown at the left.
        col_labels: one label per column, shown on top.
        out: path of the PNG to write (must end in ``.png``); missing folders are created.
        cell_inches: size of one grid cell in inches, > 0.

    Returns:
        The path written.
    """
    if not images or any(len(row) != len(col_labels) for row in images) or not col_labels:
        raise ValueError(
            "images must be a non-empty list of rows, each with one image per column label "
            f"({len(col_labels)} labels)"
        )
    if len(row_labels) != len(images):
        raise ValueError(
            f"row_labels must have one label per row of images ({len(images)}); got {len(row_labels)}"
        )
    if not cell_inches > 0:
        raise ValueError(f"cell_inches must be > 0; got {cell_inches}")
    for row_index, row in enumerate(images):
        for column_index, image in enumerate(row):
            _check_image(image, f"images[{row_index}][{column_index}]")

    figure = Figure(figsize=(cell_inches * len(col_labels), cell_inches * len(images)), layout="constrained")
    grid = figure.subplots(len(images), len(col_labels), squeeze=False)
    for row_index, row in enumerate(images):
        for column_index, image in enumerate(row):
            axes = grid[row_index][column_index]
            picture = image.detach().cpu().float()
            axes.imshow(picture.expand(3, -1, -1).permute(1, 2, 0).numpy(), interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if row_index == 0:
                axes.set_title(col_labels[column_index], fontsize="small")
            if column_index == 0:
                axes.set_ylabel(row_labels[row_index], fontsize="small")
    return _save(figure, out)


def _figure(panels: int) -> tuple[Figure, list[Axes]]:
    """A figure with ``panels`` axes side by side, the layout every chart here shares."""
    width, height = _PANEL_SIZE
    figure = Figure(figsize=(width * panels, height), layout="constrained")
    return figure, list(figure.subplots(1, panels, squeeze=False)[0])


def _save(figure: Figure, out: PathLike) -> Path:
    """Write ``figure`` as a PNG at ``out`` atomically: a temporary file in the same folder, then rename."""
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise ValueError(f"out must be a path ending in .png; got {str(out)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("xb") as stream:
            figure.savefig(stream, format="png", dpi=_DPI)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _require_keys(rows: Sequence[Row], keys: Sequence[str]) -> None:
    if isinstance(rows, Mapping | str) or not isinstance(rows, Sequence) or not rows:
        raise ValueError("rows must be a non-empty list of dicts, one per method or setting")
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"rows[{index}] must be a dict; got {type(row).__name__}")
        for key in keys:
            if key not in row:
                raise ValueError(f"rows[{index}] is missing key {key!r} (this plot needs {', '.join(keys)})")


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _labels(rows: Sequence[Row], key: str) -> list[str]:
    return [str(row[key]) for row in rows]


def _column(rows: Sequence[Row], key: str, strictly_positive: bool = False) -> list[float]:
    """The values of ``key`` as floats, each finite and >= 0 (> 0 if ``strictly_positive``)."""
    values = []
    for index, row in enumerate(rows):
        value = row[key]
        if not _is_number(value) or value < 0 or (strictly_positive and value == 0):
            bound = "> 0" if strictly_positive else ">= 0"
            raise ValueError(f"rows[{index}][{key!r}] must be a finite number {bound}; got {value!r}")
        values.append(float(value))
    return values


def _proportions(rows: Sequence[Row], key: str) -> list[float]:
    values = _column(rows, key)
    for index, value in enumerate(values):
        if value > 1:
            raise ValueError(
                f"rows[{index}][{key!r}] must be a proportion in [0, 1] (pass 0.731, not 73.1); got {value}"
            )
    return values


def _check_image(image: object, name: str) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name} must be a tensor of shape (3, H, W) or (1, H, W); got {shape}")
    if not image.is_floating_point() or not bool(((image >= 0) & (image <= 1)).all()):
        raise ValueError(f"{name} must be a float tensor with values in [0, 1]")
