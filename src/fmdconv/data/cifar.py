"""CIFAR-10 and CIFAR-100 read from their "python version" pickle batches.

The archives ``cifar-10-python.tar.gz`` and ``cifar-100-python.tar.gz`` from
https://www.cs.toronto.edu/~kriz/cifar.html extract to ``cifar-10-batches-py/`` and
``cifar-100-python/``. Each batch file is a pickled dict with ``b"data"``, a ``(N, 3072)`` uint8
array whose rows are the red, green and blue 32x32 planes in turn, and the labels as a list of ints.
"""

from __future__ import annotations

import codecs
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np
import torch
from torch import Tensor

from fmdconv.data.errors import DatasetFormatError
from fmdconv.data.locate import find_dataset_dir
from fmdconv.data.splits import Split, check_split
from fmdconv.data.tensor_dataset import TensorImageDataset, check_label_range
from fmdconv.data.transforms import Transform

CIFAR_SIZE = 32
CIFAR_CHANNELS = 3
CIFAR_DOWNLOAD_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its batches and labels.

    Attributes:
        name: registry name of the dataset.
        archive: the archive to download.
        folder: the folder the archive extracts to.
        files: batch files of each split.
        label_key: dict key of the labels in a batch.
        num_classes: number of classes.
    """

    name: str
    archive: str
    folder: str
    files: dict[Split, tuple[str, ...]]
    label_key: bytes
    num_classes: int

    def how_to_get(self) -> str:
        """Instructions for a user who does not have the data yet."""
        all_files = ",".join(name for names in self.files.values() for name in names)
        return (
            f"This machine cannot download it: download {self.archive} from {CIFAR_DOWNLOAD_PAGE} yourself, "
            f"extract it, and pass --data-dir pointing at {self.folder}/ or at the folder that contains it. "
            f"Expected layout: {self.folder}/{{{all_files}}}."
        )


CIFAR10_LAYOUT = CifarLayout(
    name="cifar10",
    archive="cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    label_key=b"labels",
    num_classes=10,
)
CIFAR100_LAYOUT = CifarLayout(
    name="cifar100",
    archive="cifar-100-python.tar.gz",
    folder="cifar-100-python",
    files={"train": ("train",), "test": ("test",)},
    label_key=b"fine_labels",
    num_classes=100,
)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that builds only what a CIFAR batch holds: numpy arrays, bytes, lists and dicts.

    Any other global in the file is refused, so a malicious file cannot run code.
    """

    _numpy_reconstruct = np.empty(0).__reduce__()[0]
    ALLOWED_GLOBALS: ClassVar[dict[tuple[str, str], Any]] = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,  # pickled by numpy < 2
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,  # pickled by numpy >= 2
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes pickled by Python 3 with protocol < 3
    }

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file, encoding="bytes")

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}, which a CIFAR batch never holds"
            ) from None


def read_cifar_batch(path: Path, label_key: bytes) -> tuple[Tensor, Tensor]:
    """Read one CIFAR batch file.

    Returns:
        ``(images, labels)``: a ``(N, 3, 32, 32)`` uint8 tensor and a ``(N,)`` int64 tensor.

    Raises:
        DatasetFormatError: the file is not a readable pickle, or lacks ``b"data"`` or
            ``label_key``, or the arrays have the wrong type or shape.
    """
    try:
        with open(path, "rb") as stream:
            batch = _CifarUnpickler(stream).load()
    except Exception as error:  # a truncated or corrupt pickle can fail in many ways
        raise DatasetFormatError(
            path, f"not a readable CIFAR pickle ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DatasetFormatError(path, f"expected a dict with keys b'data' and {label_key!r}, found {found}")
    data = batch[b"data"]
    pixels_per_image = CIFAR_CHANNELS * CIFAR_SIZE * CIFAR_SIZE
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != pixels_per_image
    ):
        described = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetFormatError(
            path, f"b'data' must be a uint8 array of shape (N, {pixels_per_image}), got {described}"
        )
    labels = np.asarray(batch[label_key])
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(
            path, f"{label_key!r} must hold {data.shape[0]} integers, got {labels.dtype} {labels.shape}"
        )
    images = torch.from_numpy(np.ascontiguousarray(data)).reshape(-1, CIFAR_CHANNELS, CIFAR_SIZE, CIFAR_SIZE)
    return images, torch.from_numpy(labels.astype(np.int64))


class CifarDataset(TensorImageDataset):
    """A CIFAR variant (given by the subclass's ``layout``) with its images held in memory.

    Images are ``(3, 32, 32)`` uint8 tensors.

    Args:
        split: ``"train"`` or ``"test"``.
        data_dir: the extracted folder (``cifar-10-batches-py/`` or ``cifar-100-python/``) or its parent.
        transform: applied to each uint8 image on access.

    Raises:
        DatasetNotFoundError: ``data_dir`` is None or does not hold the batch files.
        DatasetFormatError: a batch file is corrupt, truncated, or holds out-of-range labels.
    """

    layout: ClassVar[CifarLayout]

    def __init__(
        self, split: str = "train", data_dir: str | Path | None = None, transform: Transform | None = None
    ) -> None:
        split = check_split(split)
        files = self.layout.files[split]
        candidates = [] if data_dir is None else [Path(data_dir), Path(data_dir) / self.layout.folder]
        directory = find_dataset_dir(self.layout.name, candidates, files, self.layout.how_to_get())
        batches = [read_cifar_batch(directory / name, self.layout.label_key) for name in files]
        for name, (_, labels) in zip(files, batches, strict=True):
            check_label_range(labels, self.layout.num_classes, directory / name)
        super().__init__(
            torch.cat([images for images, _ in batches]),
            torch.cat([labels for _, labels in batches]),
            transform,
        )
        self.root = directory


class CIFAR10(CifarDataset):
    """CIFAR-10: 32x32 colour images of 10 classes, 50,000 train / 10,000 test."""

    layout = CIFAR10_LAYOUT


class CIFAR100(CifarDataset):
    """CIFAR-100: 32x32 colour images of 100 classes (the fine labels), 50,000 train / 10,000 test."""

    layout = CIFAR100_LAYOUT
