"""Tests of fmdconv.data: readers on files written here in the real formats, transforms, builders, loaders."""

from __future__ import annotations

import ast
import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import fmdconv.data as data
from fmdconv.data import (
    CIFAR10,
    CIFAR100,
    DATASETS,
    CenterCrop,
    Compose,
    DatasetFormatError,
    DatasetNotFoundError,
    DistributedEvalSampler,
    FashionMNIST,
    GrayscaleToRGB,
    ImageFolderDataset,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    SyntheticImageDataset,
    ToFloat,
    build_dataset,
    build_loader,
    build_transforms,
)

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


# ---------------------------------------------------------------- writers of the real file formats


def write_idx(path: Path, array: np.ndarray, magic: bytes | None = None, drop_bytes: int = 0) -> None:
    """Write ``array`` as a gzip IDX file; ``magic`` overrides the magic number, ``drop_bytes`` truncates."""
    header = magic if magic is not None else bytes((0, 0, 0x08, array.ndim))
    raw = header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as stream:
        stream.write(raw[: len(raw) - drop_bytes])


def make_fashion_dir(directory: Path, sizes: dict[str, int] | None = None, seed: int = 0) -> dict[str, tuple]:
    """Write all four Fashion-MNIST files with random content; return {split: (images, labels)}."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, count in (sizes or {"train": 12, "test": 5}).items():
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        image_file, label_file = FASHION_FILES[split]
        write_idx(directory / image_file, images)
        write_idx(directory / label_file, labels)
        written[split] = (images, labels)
    return written


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], label_key: bytes) -> None:
    """Write a CIFAR batch: a pickled dict of (N, 3072) uint8 rows and a list of labels."""
    batch = {
        b"batch_label": b"written by the tests",
        b"data": images.reshape(len(images), -1),
        label_key: labels,
    }
    with open(path, "wb") as stream:
        pickle.dump(batch, stream, protocol=2)


def make_cifar10_dir(directory: Path, per_batch: int = 4) -> np.ndarray:
    """Write cifar-10-batches-py/ below ``directory``; return the train images in file order."""
    folder = directory / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    train = []
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        write_cifar_batch(folder / name, images, rng.integers(0, 10, per_batch).tolist(), b"labels")
        if name != "test_batch":
            train.append(images)
    return np.concatenate(train)


def make_image_tree(root: Path) -> None:
    """train/{cat,dog} and val/{cat,dog} with PNGs of several sizes, one grey, one upper-case .JPEG."""
    for split, count in (("train", 3), ("val", 2)):
        for class_index, name in enumerate(("dog", "cat")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.full((10 + i, 14, 3), 40 * class_index + i, dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"img{i}.png")
    Image.fromarray(np.full((8, 6), 200, dtype=np.uint8), mode="L").save(root / "train" / "cat" / "grey.png")
    Image.fromarray(np.zeros((6, 6, 3), dtype=np.uint8)).save(root / "train" / "dog" / "photo.JPEG")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")


# ---------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_reads_idx_files_as_uint8(tmp_path: Path) -> None:
    written = make_fashion_dir(tmp_path)
    for split, (images, labels) in written.items():
        dataset = FashionMNIST(split, data_dir=tmp_path)
        assert len(dataset) == len(labels)
        image, label = dataset[3]
        assert image.dtype == torch.uint8 and image.shape == (1, 28, 28)
        assert torch.equal(image[0], torch.from_numpy(images[3])) and label == labels[3]


@pytest.mark.parametrize("subfolder", ["fashion-mnist", "FashionMNIST/raw"])
def test_fashion_mnist_finds_files_below_a_parent_folder(tmp_path: Path, subfolder: str) -> None:
    make_fashion_dir(tmp_path / subfolder)
    assert FashionMNIST("test", data_dir=tmp_path).root == tmp_path / subfolder


@pytest.mark.parametrize(
    ("damage", "bad_file", "message"),
    [
        ("truncate", "t10k-images-idx3-ubyte.gz", "truncated"),
        ("header_only", "t10k-labels-idx1-ubyte.gz", "shorter than the 8-byte IDX header"),
        ("magic", "t10k-images-idx3-ubyte.gz", "bad IDX magic number 0x00000903"),
        ("not_gzip", "t10k-labels-idx1-ubyte.gz", "not a readable gzip file"),
        ("cut_gzip", "t10k-images-idx3-ubyte.gz", "not a readable gzip file"),
        ("count", "t10k-labels-idx1-ubyte.gz", "holds 4 labels but t10k-images-idx3-ubyte.gz holds 5 images"),
        ("label_range", "t10k-labels-idx1-ubyte.gz", "label 10 is outside 0..9"),
        ("image_size", "t10k-images-idx3-ubyte.gz", r"images are \(27, 28\)"),
    ],
)
def test_fashion_mnist_damaged_file_error_names_file_and_problem(
    tmp_path: Path, damage: str, bad_file: str, message: str
) -> None:
    images, labels = make_fashion_dir(tmp_path)["test"]
    path = tmp_path / bad_file
    if damage == "truncate":
        write_idx(path, images, drop_bytes=100)
    elif damage == "header_only":
        path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00"))
    elif damage == "magic":
        write_idx(path, images, magic=b"\x00\x00\x09\x03")
    elif damage == "not_gzip":
        path.write_bytes(b"plain bytes, no gzip")
    elif damage == "cut_gzip":
        path.write_bytes(path.read_bytes()[:-200])
    elif damage == "count":
        write_idx(path, labels[:4])
    elif damage == "label_range":
        write_idx(path, np.where(np.arange(len(labels)) == 2, 10, labels))
    elif damage == "image_size":
        write_idx(path, images[:, :27])
    with pytest.raises(DatasetFormatError, match=message) as caught:
        FashionMNIST("test", data_dir=tmp_path)
    assert str(path) in str(caught.value) and caught.value.path == path


def test_fashion_mnist_missing_says_where_it_looked_and_how_to_install(tmp_path: Path) -> None:
    (tmp_path / "fashion-mnist").mkdir()
    with pytest.raises(DatasetNotFoundError) as caught:
        FashionMNIST("train", data_dir=tmp_path)
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    for looked in (tmp_path, tmp_path / "fashion-mnist", tmp_path / "FashionMNIST" / "raw"):
        assert str(looked) in message
    assert caught.value.searched[0] == tmp_path
    assert "missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message


@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_sizes_labels_and_normalisation_constants() -> None:
    train, test = FashionMNIST("train"), FashionMNIST("test")
    assert (len(train), len(test)) == (60000, 10000)
    for dataset in (train, test):
        assert dataset.images.shape[1:] == (1, 28, 28)
        assert torch.equal(dataset.labels.unique(), torch.arange(10))
    pixels = train.images.double() / 255
    info = DATASETS["fashion_mnist"]
    assert pixels.mean().item() == pytest.approx(info.mean[0], abs=1e-4)
    assert pixels.std(unbiased=False).item() == pytest.approx(info.std[0], abs=1e-4)


# ---------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("point_at", ["parent", "folder"])
def test_cifar10_concatenates_batches_in_order_with_rgb_planes(tmp_path: Path, point_at: str) -> None:
    train_images = make_cifar10_dir(tmp_path)
    data_dir = tmp_path if point_at == "parent" else tmp_path / "cifar-10-batches-py"
    train, test = CIFAR10("train", data_dir=data_dir), CIFAR10("test", data_dir=data_dir)
    assert (len(train), len(test)) == (20, 4)
    assert torch.equal(train.images, torch.from_numpy(train_images))
    # a batch row is the red plane, then green, then blue: channel 1 starts at byte 1024
    row = train_images[7].reshape(-1)
    assert torch.equal(train[7][0][1].reshape(-1), torch.from_numpy(row[1024:2048]))


def test_cifar100_reads_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images = np.zeros((3, 3, 32, 32), dtype=np.uint8)
    for split in ("train", "test"):
        write_cifar_batch(folder / split, images, [0, 57, 99], b"fine_labels")
    dataset = CIFAR100("test", data_dir=tmp_path)
    assert dataset.labels.tolist() == [0, 57, 99] and dataset[1][0].shape == (3, 32, 32)


class _RunsCode:
    """Pickles to a call of os.system that creates ``marker``: a CIFAR reader must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("truncated", "not a readable CIFAR pickle"),
        ("no_labels", "expected a dict with keys b'data' and b'labels'"),
        ("bad_shape", r"b'data' must be a uint8 array of shape \(N, 3072\)"),
        ("label_count", "b'labels' must hold 4 integers"),
        ("label_range", "label 10 is outside 0..9"),
        ("code", r"refusing to load \w+\.system"),
    ],
)
def test_cifar_damaged_batch_error_names_file(tmp_path: Path, content: str, message: str) -> None:
    make_cifar10_dir(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    images = np.zeros((4, 3, 32, 32), dtype=np.uint8)
    if content == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif content == "no_labels":
        path.write_bytes(pickle.dumps({b"data": images.reshape(4, -1)}))
    elif content == "bad_shape":
        write_cifar_batch(path, images[:, :, :16], [0] * 4, b"labels")
    elif content == "label_count":
        write_cifar_batch(path, images, [0] * 3, b"labels")
    elif content == "label_range":
        write_cifar_batch(path, images, [0, 10, 0, 0], b"labels")
    elif content == "code":
        path.write_bytes(pickle.dumps(_RunsCode(tmp_path / "code-ran")))
    with pytest.raises(DatasetFormatError, match=message) as caught:
        CIFAR10("test", data_dir=tmp_path)
    assert caught.value.path == path and str(path) in str(caught.value)
    assert not (tmp_path / "code-ran").exists()


def test_cifar_missing_says_where_it_looked_and_the_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        CIFAR100("train")
    assert "(no directory was given)" in str(caught.value) and "--data-dir" in str(caught.value)
    with pytest.raises(DatasetNotFoundError) as caught:
        CIFAR10("test", data_dir=tmp_path)
    message = str(caught.value)
    assert f"{tmp_path}: missing test_batch" in message
    assert f"{tmp_path / 'cifar-10-batches-py'}: does not exist" in message
    assert "cifar-10-python.tar.gz" in message and "cifar-10-batches-py/{data_batch_1," in message


# ---------------------------------------------------------------- class folders


def test_image_folder_labels_rgb_and_split_folders(tmp_path: Path) -> None:
    make_image_tree(tmp_path)
    train = ImageFolderDataset("train", data_dir=tmp_path)
    test = ImageFolderDataset("test", data_dir=tmp_path)
    assert train.classes == test.classes == ["cat", "dog"]
    assert (len(train), len(test)) == (8, 4)  # notes.txt is skipped, .JPEG is read
    assert [label for _, label in train.samples] == [0] * 4 + [1] * 4
    grey_index = [path.name for path, _ in train.samples].index("grey.png")
    grey, label = train[grey_index]
    assert label == 0 and grey.dtype == torch.uint8 and grey.shape == (3, 8, 6) and bool((grey == 200).all())
    image, label = test[3]
    assert label == 1 and image.shape == (3, 11, 14) and int(image[0, 0, 0]) == 1
    assert all(path.parent.parent.name == "val" for path, _ in test.samples)


def test_image_folder_val_class_missing_from_train_is_an_error(tmp_path: Path) -> None:
    make_image_tree(tmp_path)
    (tmp_path / "val" / "bird").mkdir()
    with pytest.raises(DatasetFormatError, match="not among the 2 classes"):
        ImageFolderDataset("test", data_dir=tmp_path)


def test_image_folder_flat_val_and_corrupt_image_are_errors(tmp_path: Path) -> None:
    make_image_tree(tmp_path)
    flat = tmp_path / "flat"
    (flat / "val").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(flat / "val" / "ILSVRC_val_1.JPEG")
    with pytest.raises(DatasetFormatError, match="holds 1 images outside class folders"):
        ImageFolderDataset("test", data_dir=flat)
    broken = tmp_path / "train" / "cat" / "img1.png"
    broken.write_bytes(broken.read_bytes()[:30])
    dataset = ImageFolderDataset("train", data_dir=tmp_path)
    with pytest.raises(DatasetFormatError, match="cannot decode image") as caught:
        dataset[[path for path, _ in dataset.samples].index(broken)]
    assert caught.value.path == broken


def test_image_folder_missing_names_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"<data-dir>/train/<class>/<image>") as caught:
        ImageFolderDataset("test", data_dir=tmp_path)
    assert f"{tmp_path}: missing val" in str(caught.value)


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_balanced_and_split_dependent() -> None:
    first, again = SyntheticImageDataset(length=30, seed=3), SyntheticImageDataset(length=30, seed=3)
    torch.manual_seed(0)
    image, label = first[13]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32) and label == 3
    assert torch.equal(image, again[13][0]) and torch.equal(first[-1][0], first[29][0])
    assert not torch.equal(image, SyntheticImageDataset(length=30, seed=4)[13][0])
    assert not torch.equal(image, SyntheticImageDataset(length=30, seed=3, split="test")[13][0])
    assert [first[i][1] for i in range(20)] == list(range(10)) * 2
    with pytest.raises(IndexError):
        first[30]


def test_synthetic_is_learnable_by_a_linear_model() -> None:
    dataset = SyntheticImageDataset(length=200, num_classes=4, image_size=8, in_chans=2, transform=ToFloat())
    inputs = torch.stack([dataset[i][0] for i in range(len(dataset))]).flatten(1)
    targets = torch.tensor([dataset[i][1] for i in range(len(dataset))])
    weights = torch.zeros(inputs.shape[1], 4, requires_grad=True)
    losses = []
    for _ in range(30):  # plain gradient descent on a linear classifier
        loss = torch.nn.functional.cross_entropy((inputs - 0.5) @ weights, targets)
        (gradient,) = torch.autograd.grad(loss, weights)
        with torch.no_grad():
            weights -= 0.5 * gradient
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    ("argument", "value"),
    [("length", 0), ("num_classes", 0), ("image_size", -1), ("seed", -2), ("noise", -0.1)],
)
def test_synthetic_rejects_bad_arguments(argument: str, value: float) -> None:
    with pytest.raises(ValueError, match=argument):
        SyntheticImageDataset(**{argument: value})


# ---------------------------------------------------------------- transforms


def test_to_float_and_normalize_values() -> None:
    image = torch.tensor([[[0, 255]], [[51, 102]]], dtype=torch.uint8)
    as_float = ToFloat()(image)
    assert as_float.dtype == torch.float32 and torch.allclose(
        as_float, torch.tensor([[[0.0, 1.0]], [[0.2, 0.4]]])
    )
    normalised = Normalize((0.5, 0.2), (0.5, 0.1))(as_float)
    assert torch.allclose(normalised, torch.tensor([[[-1.0, 1.0]], [[0.0, 2.0]]]))


@pytest.mark.parametrize(
    ("transform", "image", "message"),
    [
        (ToFloat(), torch.zeros(1, 2, 2), "ToFloat expects a uint8 image"),
        (Normalize((0.5,), (0.5,)), torch.zeros(1, 2, 2, dtype=torch.uint8), "apply ToFloat first"),
        (Normalize((0.5,), (0.5,)), torch.zeros(3, 2, 2), "1 channel statistics, the image has 3 channels"),
        (CenterCrop(5), torch.zeros(1, 4, 8), r"CenterCrop size \(5, 5\) is larger than the image \(4, 8\)"),
        (RandomCrop(9, padding=2), torch.zeros(1, 4, 4), "larger than the padded image"),
        (GrayscaleToRGB(), torch.zeros(3, 2, 2), "expects a 1-channel image"),
        (Resize(4), torch.zeros(2, 2), r"image must be a \(C, H, W\) tensor"),
    ],
)
def test_transforms_reject_unsuitable_images(transform, image: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        transform(image)


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda: RandomCrop(0), "size"),
        (lambda: RandomCrop((4, 0)), r"size\[1\]"),
        (lambda: RandomCrop(4, padding=-1), "padding"),
        (lambda: RandomCrop(4, padding=1.5), "padding"),
        (lambda: RandomHorizontalFlip(1.5), "p must be a probability"),
        (lambda: RandomResizedCrop(8, scale=(0.5, 0.2)), "scale"),
        (lambda: RandomResizedCrop(8, scale=(0.0, 1.0)), "scale"),
        (lambda: RandomResizedCrop(8, ratio=(2.0,)), "ratio"),
        (lambda: Resize(2.5), "size must be a positive int"),
        (lambda: CenterCrop((1, 2, 3)), r"size must be a positive int or a \(height, width\) pair"),
        (lambda: Normalize((0.1, 0.2), (1.0,)), "equal length"),
        (lambda: Normalize((0.1,), (0.0,)), "std must be positive"),
        (lambda: Compose([ToFloat(), "resize"]), r"transforms\[1\] must be callable"),
    ],
)
def test_transform_bad_arguments_name_the_argument(build, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        build()


def test_horizontal_flip_mirrors_columns_with_probability_p() -> None:
    image = torch.arange(12, dtype=torch.uint8).reshape(1, 3, 4)
    assert torch.equal(RandomHorizontalFlip(1.0)(image), image[:, :, [3, 2, 1, 0]])
    assert torch.equal(RandomHorizontalFlip(0.0)(image), image)
    torch.manual_seed(0)
    flips = sum(not torch.equal(RandomHorizontalFlip(0.5)(image), image) for _ in range(400))
    assert 150 < flips < 250


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    padding=st.integers(0, 4),
    crop_height=st.integers(1, 17),
    crop_width=st.integers(1, 17),
)
def test_random_crop_is_a_window_of_the_zero_padded_image(
    height: int, width: int, padding: int, crop_height: int, crop_width: int
) -> None:
    image = torch.arange(1, 1 + 2 * height * width, dtype=torch.float32).reshape(2, height, width)
    padded = torch.nn.functional.pad(image, (padding,) * 4)
    transform = RandomCrop((crop_height, crop_width), padding=padding)
    if crop_height > padded.shape[1] or crop_width > padded.shape[2]:
        with pytest.raises(ValueError, match="larger than the padded image"):
            transform(image)
        return
    crop = transform(image)
    assert crop.shape == (2, crop_height, crop_width)
    windows = [
        padded[:, top : top + crop_height, left : left + crop_width]
        for top in range(padded.shape[1] - crop_height + 1)
        for left in range(padded.shape[2] - crop_width + 1)
    ]
    assert any(torch.equal(crop, window) for window in windows)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    size=st.integers(1, 40),
    scale_low=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
)
def test_random_resized_crop_box_stays_inside_and_output_has_size(
    height: int, width: int, size: int, scale_low: float, seed: int
) -> None:
    transform = RandomResizedCrop(size, scale=(scale_low, 1.0))
    torch.manual_seed(seed)
    top, left, crop_height, crop_width = transform.crop_box(height, width)
    assert top >= 0 and crop_height > 0 and top + crop_height <= height
    assert left >= 0 and crop_width > 0 and left + crop_width <= width
    image = torch.full((3, height, width), 77, dtype=torch.uint8)
    output = transform(image)
    assert output.shape == (3, size, size) and output.dtype == torch.uint8 and bool((output == 77).all())


def test_random_resized_crop_falls_back_to_a_centred_crop_in_the_ratio_range() -> None:
    transform = RandomResizedCrop(4, scale=(0.9, 1.0), ratio=(1.0, 1.0))
    assert transform.crop_box(10, 100) == (0, 45, 10, 10)  # no square of 90 % of the area fits
    assert transform.crop_box(100, 10) == (45, 0, 10, 10)


def test_random_transforms_repeat_under_the_same_seed() -> None:
    pipeline = Compose([RandomCrop(20, padding=3), RandomHorizontalFlip(), ToFloat(), RandomResizedCrop(12)])
    image = torch.randint(0, 256, (3, 24, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    first = [pipeline(image) for _ in range(5)]
    torch.manual_seed(5)
    second = [pipeline(image) for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(torch.equal(first[0], other) for other in first[1:])


def test_resize_scales_shorter_side_and_center_crop_takes_the_middle() -> None:
    image = torch.arange(2 * 300 * 400, dtype=torch.float32).reshape(2, 300, 400)
    assert Resize(150)(image).shape == (2, 150, 200)
    assert Resize(10)(image.transpose(1, 2)).shape == (2, 13, 10)
    assert torch.equal(CenterCrop((100, 50))(image), image[:, 100:200, 175:225])
    constant = torch.full((1, 5, 7), 9, dtype=torch.uint8)
    assert torch.equal(Resize(10)(constant), torch.full((1, 10, 14), 9, dtype=torch.uint8))


def test_grayscale_to_rgb_and_reprs() -> None:
    grey = torch.rand(1, 3, 3)
    assert torch.equal(GrayscaleToRGB()(grey), grey.expand(3, 3, 3))
    assert repr(RandomCrop(32, padding=4)) == "RandomCrop(size=(32, 32), padding=4)"
    assert repr(Normalize((0.5,), (0.25,))) == "Normalize(mean=(0.5,), std=(0.25,))"
    assert repr(Compose([ToFloat(), Resize(8)])) == "Compose([\n    ToFloat(),\n    Resize(size=8),\n])"


# ---------------------------------------------------------------- recipes, registry, builders


def test_registry_covers_the_five_datasets() -> None:
    assert set(DATASETS) == {"fashion_mnist", "cifar10", "cifar100", "imagenet", "synthetic"}
    for info in DATASETS.values():
        assert len(info.mean) == len(info.std) == info.in_chans
    with pytest.raises(ValueError, match=r"dataset must be one of \['cifar10', 'cifar100', 'fashion_mnist'"):
        build_transforms("mnist", train=True)
    with pytest.raises(ValueError, match="dataset must be one of"):
        build_dataset("svhn")


def test_recipes_follow_the_papers() -> None:
    names = {
        (dataset, train, size): [
            type(step).__name__ for step in build_transforms(dataset, train, size).transforms
        ]
        for dataset in ("cifar10", "fashion_mnist", "imagenet")
        for train in (True, False)
        for size in (None, 224)
    }
    small_train = ["RandomCrop", "RandomHorizontalFlip", "ToFloat", "Normalize"]
    assert names["cifar10", True, None] == names["fashion_mnist", True, None] == small_train
    assert names["cifar10", False, None] == ["ToFloat", "Normalize"]
    assert names["cifar10", True, 224] == [
        "RandomCrop",
        "RandomHorizontalFlip",
        "ToFloat",
        "Resize",
        "Normalize",
    ]
    assert names["imagenet", True, None] == [
        "ToFloat",
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "Normalize",
    ]
    assert names["imagenet", False, None] == ["ToFloat", "Resize", "CenterCrop", "Normalize"]
    assert build_transforms("cifar100", True).transforms[0].padding == 4
    assert build_transforms("fashion_mnist", True).transforms[0].padding == 2
    assert build_transforms("imagenet", False).transforms[1].size == 256
    image = torch.randint(0, 256, (3, 300, 451), dtype=torch.uint8)
    assert build_transforms("imagenet", False)(image).shape == (3, 224, 224)
    assert build_transforms("imagenet", True, 160)(image).shape == (3, 160, 160)
    with pytest.raises(ValueError, match="image_size must be a positive int or None"):
        build_transforms("cifar10", True, 0)


def test_cifar_eval_pipeline_only_normalises(tmp_path: Path) -> None:
    make_cifar10_dir(tmp_path)
    dataset = build_dataset("cifar10", "test", data_dir=tmp_path)
    raw = CIFAR10("test", data_dir=tmp_path)[2][0]
    info = DATASETS["cifar10"]
    expected = (raw.float() / 255 - torch.tensor(info.mean).view(3, 1, 1)) / torch.tensor(info.std).view(
        3, 1, 1
    )
    assert torch.allclose(dataset[2][0], expected, atol=1e-6)
    upsampled = build_dataset("cifar10", "train", data_dir=tmp_path, image_size=64)
    assert upsampled[0][0].shape == (3, 64, 64)


def test_build_dataset_subset_keeps_the_first_images(tmp_path: Path) -> None:
    _, labels = make_fashion_dir(tmp_path)["train"]
    subset = build_dataset("fashion_mnist", data_dir=tmp_path, subset=5, train_transforms=False)
    full = build_dataset("fashion_mnist", data_dir=tmp_path, train_transforms=False)
    assert len(subset) == 5
    assert all(torch.equal(subset[i][0], full[i][0]) and subset[i][1] == labels[i] for i in range(5))
    with pytest.raises(ValueError, match="subset must be at most the 12 images of fashion_mnist train"):
        build_dataset("fashion_mnist", data_dir=tmp_path, subset=13)
    with pytest.raises(ValueError, match="subset must be a positive int or None"):
        build_dataset("synthetic", subset=0)


def test_build_dataset_synthetic_and_argument_checks(tmp_path: Path) -> None:
    train = build_dataset("synthetic", seed=7)
    image, _ = train[0]
    assert len(train) == 2048 and image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert torch.equal(image, build_dataset("synthetic", seed=7)[0][0])
    assert len(build_dataset("synthetic", "test", subset=10)) == 10
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'test'\]"):
        build_dataset("synthetic", split="val")
    with pytest.raises(ValueError, match="data_dir must be None for synthetic"):
        build_dataset("synthetic", data_dir=tmp_path)


def test_build_dataset_imagenet_reads_val_for_test(tmp_path: Path) -> None:
    make_image_tree(tmp_path)
    dataset = build_dataset("imagenet", "test", data_dir=tmp_path, image_size=16)
    image, label = dataset[0]
    assert len(dataset) == 4 and image.shape == (3, 16, 16) and label == 0


# ---------------------------------------------------------------- loaders


def test_loader_batches_shuffle_and_drop_last() -> None:
    dataset = SyntheticImageDataset(length=10, image_size=4, transform=ToFloat())
    eval_batches = list(build_loader(dataset, batch_size=4, train=False))
    assert [len(labels) for _, labels in eval_batches] == [4, 4, 2]
    assert eval_batches[0][0].shape == (4, 3, 4, 4)
    assert torch.cat([labels for _, labels in eval_batches]).tolist() == [i % 10 for i in range(10)]
    train_order = [labels.tolist() for _, labels in build_loader(dataset, batch_size=4, train=True, seed=3)]
    assert [len(labels) for labels in train_order] == [4, 4]
    assert train_order == [
        labels.tolist() for _, labels in build_loader(dataset, batch_size=4, train=True, seed=3)
    ]
    assert [label for batch in train_order for label in batch] != list(range(8))  # shuffled
    kept = list(build_loader(dataset, batch_size=4, train=True, drop_last=False))
    assert sorted(torch.cat([labels for _, labels in kept]).tolist()) == sorted(i % 10 for i in range(10))


def test_loader_workers_persist_and_augment_reproducibly() -> None:
    dataset = SyntheticImageDataset(
        length=8, image_size=6, transform=Compose([RandomCrop(6, padding=2), ToFloat()])
    )

    def first_epoch() -> torch.Tensor:
        loader = build_loader(dataset, batch_size=4, train=True, num_workers=2, seed=11)
        assert loader.persistent_workers
        return torch.cat([images for images, _ in loader])

    assert torch.equal(first_epoch(), first_epoch())


def test_loader_argument_checks() -> None:
    dataset = SyntheticImageDataset(length=4)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        build_loader(dataset, batch_size=0, train=True)
    with pytest.raises(ValueError, match="num_workers must be an int >= 0"):
        build_loader(dataset, batch_size=2, train=True, num_workers=-1)
    with pytest.raises(RuntimeError, match="init_process_group"):
        build_loader(dataset, batch_size=2, train=True, distributed=True)


def test_distributed_loaders_use_sharding_samplers(tmp_path: Path) -> None:
    dataset = SyntheticImageDataset(length=10, image_size=4)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        train = build_loader(dataset, batch_size=4, train=True, distributed=True)
        evaluation = build_loader(dataset, batch_size=4, train=False, distributed=True)
    finally:
        dist.destroy_process_group()
    assert isinstance(train.sampler, torch.utils.data.DistributedSampler)
    assert isinstance(evaluation.sampler, DistributedEvalSampler) and len(evaluation.sampler) == 10


def test_distributed_eval_sampler_sees_every_sample_once() -> None:
    shards = [list(DistributedEvalSampler(10, num_replicas=3, rank=rank)) for rank in range(3)]
    assert sorted(index for shard in shards for index in shard) == list(range(10)) and [
        len(shard) for shard in shards
    ] == [4, 3, 3]
    with pytest.raises(ValueError, match="rank must be in"):
        DistributedEvalSampler(10, num_replicas=2, rank=2)


# ---------------------------------------------------------------- package boundaries


def test_data_package_imports_no_layers_or_models() -> None:
    imported = set()
    for source in Path(data.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert not {name for name in imported if name.startswith(("fmdconv.layers", "fmdconv.models"))}
    assert not {name for name in imported if name.split(".")[0] in {"torchvision", "timm"}}
