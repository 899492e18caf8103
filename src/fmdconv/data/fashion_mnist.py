"""Fashion-MNIST read from its four gzip IDX files."""

from __future__ import annotations

from pathlib import Path

from fmdconv.data.errors import DatasetFormatError
from fmdconv.data.idx import read_idx_ubyte
from fmdconv.data.locate import find_dataset_dir
from fmdconv.data.splits import Split, check_split
from fmdconv.data.tensor_dataset import TensorImageDataset, check_label_range
from fmdconv.data.transforms import Transform

DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES: dict[Split, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Where the files may sit below a user's --data-dir: the folder itself, the Debian package's
# folder name, and the folder torchvision downloads to.
FASHION_MNIST_SUBDIRS = ("", "fashion-mnist", "FashionMNIST/raw")
FASHION_MNIST_HOW_TO_GET = (
    "Install it with `apt-get install dataset-fashion-mnist` (files go to "
    f"{DEFAULT_FASHION_MNIST_DIR}), or pass --data-dir pointing at a folder that holds "
    + ", ".join(name for pair in FASHION_MNIST_FILES.values() for name in pair)
    + "."
)
FASHION_MNIST_CLASSES = 10
FASHION_MNIST_SIZE = 28


class FashionMNIST(TensorImageDataset):
    """Fashion-MNIST: 28x28 grey images of 10 clothing classes, 60,000 train / 10,000 test.

    Images are ``(1, 28, 28)`` uint8 tensors, held in memory.

    Args:
        split: ``"train"`` or ``"test"``.
        data_dir: folder holding the IDX files (or a parent of ``fashion-mnist/`` or
            ``FashionMNIST/raw/``); defaults to the Debian package's ``/usr/share/datasets/fashion-mnist``.
        transform: applied to each uint8 image on access.

    Raises:
        DatasetNotFoundError: the files are not there.
        DatasetFormatError: a file is corrupt, truncated, or its contents are inconsistent.
    """

    def __init__(
        self, split: str = "train", data_dir: str | Path | None = None, transform: Transform | None = None
    ) -> None:
        split = check_split(split)
        image_file, label_file = FASHION_MNIST_FILES[split]
        if data_dir is None:
            candidates = [DEFAULT_FASHION_MNIST_DIR]
        else:
            candidates = [Path(data_dir) / sub for sub in FASHION_MNIST_SUBDIRS]
        directory = find_dataset_dir(
            "fashion_mnist", candidates, [image_file, label_file], FASHION_MNIST_HOW_TO_GET
        )
        images = read_idx_ubyte(directory / image_file, ndim=3)
        labels = read_idx_ubyte(directory / label_file, ndim=1)
        if images.shape[1:] != (FASHION_MNIST_SIZE, FASHION_MNIST_SIZE):
            raise DatasetFormatError(
                directory / image_file,
                f"images are {tuple(images.shape[1:])}, Fashion-MNIST images are "
                f"{FASHION_MNIST_SIZE}x{FASHION_MNIST_SIZE}",
            )
        if labels.shape[0] != images.shape[0]:
            raise DatasetFormatError(
                directory / label_file,
                f"holds {labels.shape[0]} labels but {image_file} holds {images.shape[0]} images",
            )
        check_label_range(labels, FASHION_MNIST_CLASSES, directory / label_file)
        super().__init__(images.unsqueeze(1), labels, transform)
        self.root = directory
