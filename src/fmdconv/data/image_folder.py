"""ImageNet-style datasets stored as one folder of image files per class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from fmdconv.data.errors import DatasetFormatError
from fmdconv.data.locate import find_dataset_dir
from fmdconv.data.splits import Split, check_split
from fmdconv.data.transforms import Transform

IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})
SPLIT_FOLDERS: dict[Split, str] = {"train": "train", "test": "val"}
IMAGE_FOLDER_HOW_TO_GET = (
    "This machine cannot download ImageNet: get it yourself (https://image-net.org) and pass --data-dir "
    "pointing at a folder laid out as <data-dir>/train/<class>/<image> and <data-dir>/val/<class>/<image> "
    f"(image extensions: {', '.join(sorted(IMAGE_EXTENSIONS))}, any case). The official validation "
    "archive is flat: sort its images into one folder per class first."
)


def load_rgb_image(path: Path) -> Tensor:
    """Decode an image file with Pillow, convert it to RGB and return it as a (3, H, W) uint8 tensor.

    Raises:
        DatasetFormatError: Pillow cannot decode the file (unknown format, truncated, corrupt).
    """
    try:
        with Image.open(path) as image:
            pixels = np.array(image.convert("RGB"))
    except (OSError, Image.DecompressionBombError) as error:
        raise DatasetFormatError(path, f"cannot decode image ({error})") from error
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def _sorted_entries(directory: Path) -> tuple[list[str], list[str]]:
    """Names of the sub-folders and of the image files in ``directory``, each sorted."""
    with os.scandir(directory) as entries:
        listed = list(entries)
    folders = sorted(entry.name for entry in listed if entry.is_dir())
    images = sorted(
        entry.name
        for entry in listed
        if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
    )
    return folders, images


class ImageFolderDataset(Dataset[tuple[Tensor, int]]):
    """Images stored as ``root/train/<class>/<file>`` and ``root/val/<class>/<file>``.

    Classes are the sorted folder names of ``root/train`` (of the split's own folder when there is
    no ``train/``), so both splits share one class numbering; samples are ordered by class, then by
    file name. Images are decoded on access with Pillow and converted to RGB: ``dataset[i]`` is
    ``(transform(image), label)`` with ``image`` a (3, H, W) uint8 tensor.

    Args:
        split: ``"train"`` (reads ``train/``) or ``"test"`` (reads ``val/``).
        data_dir: the folder holding ``train/`` and ``val/``.
        transform: applied to each decoded uint8 image.

    Attributes:
        classes: class folder names; a label is an index into this list.
        samples: ``(path, label)`` of every image.

    Raises:
        DatasetNotFoundError: ``data_dir`` is None or has no folder for the split.
        DatasetFormatError: the split holds no images, holds images outside class folders only, or
            has a class folder that ``train/`` lacks; on access, an image cannot be decoded.
    """

    def __init__(
        self, split: str = "train", data_dir: str | Path | None = None, transform: Transform | None = None
    ) -> None:
        folder = SPLIT_FOLDERS[check_split(split)]
        candidates = [] if data_dir is None else [Path(data_dir)]
        self.root = find_dataset_dir("imagenet", candidates, [folder], IMAGE_FOLDER_HOW_TO_GET)
        split_dir = self.root / folder
        class_source = self.root / "train" if (self.root / "train").is_dir() else split_dir
        self.classes, _ = _sorted_entries(class_source)
        class_to_label = {name: label for label, name in enumerate(self.classes)}
        class_folders, loose_images = _sorted_entries(split_dir)
        unknown = [name for name in class_folders if name not in class_to_label]
        if unknown:
            raise DatasetFormatError(
                split_dir / unknown[0],
                f"class folder is not among the {len(self.classes)} classes of {class_source}",
            )
        self.samples = [
            (split_dir / name / file_name, class_to_label[name])
            for name in class_folders
            for file_name in _sorted_entries(split_dir / name)[1]
        ]
        if not self.samples:
            layout = (
                f"holds {len(loose_images)} images outside class folders"
                if loose_images
                else "holds no images"
            )
            raise DatasetFormatError(split_dir, f"{layout}; expected {split_dir}/<class>/<image>")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        image = load_rgb_image(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label
