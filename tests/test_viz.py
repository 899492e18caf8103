"""Plot helpers: each writes one valid PNG atomically and rejects bad rows by name."""

from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from fmdconv.viz import plot_ablation, plot_scores, plot_speed_accuracy, save_image_grid

METHODS = [
    {
        "method": "ResNet-18",
        "time": 10.1,
        "macs": 0.56e9,
        "top1": 0.9312,
        "top5": 0.9981,
        "ies": 10.85,
        "rcs": 0.0922,
    },
    {
        "method": "DyConv",
        "time": 21.4,
        "macs": 0.57e9,
        "top1": 0.9405,
        "top5": 0.9985,
        "ies": 22.75,
        "rcs": 0.0439,
    },
    {
        "method": "ODConv",
        "time": 34.8,
        "macs": 0.58e9,
        "top1": 0.9451,
        "top5": 0.9987,
        "ies": 36.82,
        "rcs": 0.0272,
    },
    {
        "method": "FMDConv",
        "time": 17.9,
        "macs": 0.57e9,
        "top1": 0.9437,
        "top5": 0.9986,
        "ies": 18.97,
        "rcs": 0.0527,
    },
]
TEMPERATURES = [
    {"temperature": temperature, "top1": top1, "top5": top5}
    for temperature, top1, top5 in [
        (61, 0.771, 0.938),
        (34, 0.776, 0.941),
        (100, 0.765, 0.935),
        (40, 0.779, 0.943),
    ]
]


def assert_single_png(folder: Path, path: Path) -> None:
    assert sorted(folder.iterdir()) == [path], "temporary files were left behind"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 0 and image.height > 0
        image.verify()


def grid_shape(figure: Figure) -> tuple[int, int]:
    """(rows, columns) of the figure's subplot grid, checking that every cell holds one axes."""
    shapes = {axes.get_subplotspec().get_geometry()[:2] for axes in figure.axes}
    assert len(shapes) == 1
    rows, columns = shapes.pop()
    assert len(figure.axes) == rows * columns
    return rows, columns


@pytest.mark.parametrize("x", ["time", "macs"])
def test_plot_speed_accuracy_writes_a_png(tmp_path: Path, x: str, saved_figures: list[Figure]) -> None:
    out = tmp_path / f"speed_accuracy_{x}.png"
    assert plot_speed_accuracy(METHODS, out, x=x) == out
    assert_single_png(tmp_path, out)
    (axes,) = saved_figures[0].axes
    points = [tuple(collection.get_offsets()[0]) for collection in axes.collections]
    assert points == [(row[x], row["top1"]) for row in METHODS]
    assert [text.get_text() for text in axes.get_legend().get_texts()] == [row["method"] for row in METHODS]
    assert axes.get_ylabel() == "Top-1 accuracy"
    assert axes.get_xlabel() == ("MACs per image" if x == "macs" else "Time (s/epoch)")


def test_plot_scores_writes_a_png(tmp_path: Path, saved_figures: list[Figure]) -> None:
    out = tmp_path / "scores.png"
    assert plot_scores(METHODS, out=str(out)) == out
    assert_single_png(tmp_path, out)
    ies, rcs = saved_figures[0].axes
    for axes, key in ((ies, "ies"), (rcs, "rcs")):
        assert [bar.get_height() for bar in axes.patches] == [row[key] for row in METHODS]
        assert [label.get_text() for label in axes.get_xticklabels()] == [row["method"] for row in METHODS]
    assert ies.get_ylabel() == "IES = time / top-1 (s/epoch)"
    assert rcs.get_ylabel() == "RCS = top-1 / time ((s/epoch)⁻¹)"


@pytest.mark.parametrize(
    "rows",
    [
        TEMPERATURES,
        [{"schedule": name, "top1": 0.77, "top5": 0.94} for name in ("linear", "step", "constant")],
    ],
)
def test_plot_ablation_writes_a_png_for_numeric_and_named_factors(
    tmp_path: Path, rows, saved_figures: list[Figure]
) -> None:
    factor = next(iter(rows[0]))
    out = tmp_path / "ablation.png"
    assert plot_ablation(rows, factor, out, factor_label=f"Initial {factor}") == out
    assert_single_png(tmp_path, out)
    # Numeric factors sorted and placed to scale; named ones in their order, evenly spaced.
    numeric = isinstance(rows[0][factor], int)
    ordered = sorted(rows, key=lambda row: row[factor]) if numeric else rows
    positions = [row[factor] for row in ordered] if numeric else list(range(len(rows)))
    for axes, key in zip(saved_figures[0].axes, ("top1", "top5"), strict=True):
        (line,) = axes.get_lines()
        assert list(line.get_xdata()) == positions
        assert list(line.get_ydata()) == [row[key] for row in ordered]
        assert [label.get_text() for label in axes.get_xticklabels()] == [str(row[factor]) for row in ordered]
        assert axes.get_xlabel() == f"Initial {factor}"


def test_save_image_grid_writes_a_png(tmp_path: Path, saved_figures: list[Figure]) -> None:
    torch.manual_seed(0)
    columns = ["Original", "Input att.", "Kernel att.", "Output att.", "All"]
    images = [[torch.rand(3, 12, 12) for _ in columns], [torch.rand(1, 8, 10) for _ in columns]]
    out = tmp_path / "nested" / "grid.png"
    assert save_image_grid(images, ["cat", "dog"], columns, out) == out
    assert_single_png(out.parent, out)
    (figure,) = saved_figures
    assert grid_shape(figure) == (2, 5)
    assert [axes.get_title() for axes in figure.axes[:5]] == columns
    assert [figure.axes[0].get_ylabel(), figure.axes[5].get_ylabel()] == ["cat", "dog"]
    for axes, image in zip(figure.axes, [image for row in images for image in row], strict=True):
        shown = torch.from_numpy(axes.get_images()[0].get_array().data)
        torch.testing.assert_close(shown, image.expand(3, -1, -1).permute(1, 2, 0))  # grey drawn as RGB


def test_existing_file_is_replaced_whole(tmp_path: Path) -> None:
    out = tmp_path / "scores.png"
    out.write_bytes(b"old")
    plot_scores(METHODS, out)
    assert_single_png(tmp_path, out)


def test_failed_save_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_savefig(self, *args, **kwargs) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_scores(METHODS, tmp_path / "scores.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("plot", "missing"),
    [
        (lambda rows, out: plot_speed_accuracy(rows, out), "time"),
        (lambda rows, out: plot_speed_accuracy(rows, out, x="macs"), "macs"),
        (lambda rows, out: plot_speed_accuracy(rows, out), "top1"),
        (lambda rows, out: plot_scores(rows, out), "ies"),
        (lambda rows, out: plot_scores(rows, out), "rcs"),
        (lambda rows, out: plot_scores(rows, out), "method"),
        (lambda rows, out: plot_ablation(rows, "time", out), "top5"),
    ],
)
def test_missing_key_is_named(tmp_path: Path, plot, missing: str) -> None:
    rows = [dict(row) for row in METHODS]
    del rows[2][missing]
    with pytest.raises(ValueError, match=rf"rows\[2\] is missing key '{missing}'"):
        plot(rows, tmp_path / "plot.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("top1", 93.1, r"rows\[0\]\['top1'\] must be a proportion in \[0, 1\] \(pass 0.731, not 73.1\)"),
        ("time", 0.0, r"rows\[0\]\['time'\] must be a finite number > 0"),
        ("time", "fast", r"rows\[0\]\['time'\] must be a finite number"),
        ("top1", True, r"rows\[0\]\['top1'\] must be a finite number"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, key: str, value, message: str) -> None:
    rows = [dict(row) for row in METHODS]
    rows[0][key] = value
    with pytest.raises(ValueError, match=message):
        plot_speed_accuracy(rows, tmp_path / "plot.png")


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="x must be one of"):
        plot_speed_accuracy(METHODS, tmp_path / "a.png", x="flops")
    with pytest.raises(ValueError, match="rows must be a non-empty list of dicts"):
        plot_scores([], tmp_path / "a.png")
    with pytest.raises(ValueError, match="rows must be a non-empty list of dicts"):
        plot_scores(METHODS[0], tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"rows\[1\] must be a dict"):
        plot_scores([METHODS[0], ("FMDConv", 1.0)], tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"out must be a path ending in \.png"):
        plot_scores(METHODS, tmp_path / "scores.pdf")
    with pytest.raises(ValueError, match="distinct values of 'temperature'"):
        plot_ablation(TEMPERATURES + TEMPERATURES[:1], "temperature", tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("images", "row_labels", "col_labels", "message"),
    [
        ([], [], ["a"], "images must be a non-empty list of rows"),
        ([[torch.rand(3, 4, 4)]], ["r"], ["a", "b"], "one image per column label"),
        ([[torch.rand(3, 4, 4)]], ["r", "s"], ["a"], "row_labels must have one label per row"),
        ([[torch.rand(4, 4)]], ["r"], ["a"], r"images\[0\]\[0\] must be a tensor of shape \(3, H, W\)"),
        (
            [[torch.rand(3, 4, 4) * 255]],
            ["r"],
            ["a"],
            r"images\[0\]\[0\] must be a float tensor with values in",
        ),
    ],
)
def test_save_image_grid_rejects_bad_input(
    tmp_path: Path, images, row_labels, col_labels, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        save_image_grid(images, row_labels, col_labels, tmp_path / "grid.png")
