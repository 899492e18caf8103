"""Images to explain, read from files or taken from a dataset.

Each image comes twice: as the model's input (normalised with the dataset's mean and standard
deviation, as in training) and as a picture to show (values in ``[0, 1]``).

An image file (anything Pillow reads: PNG, JPEG, ...) is converted to the dataset's channels (grey
``L`` or ``RGB``), resized so its shorter side is the model's input size, centre-cropped to a
square, scaled to ``[0, 1]`` and normalised. Dataset images go through the dataset's evaluation
transforms (:func:`fmdconv.data.build_dataset` without augmentation); their pictures are those inputs
with the normalisation undone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from fmdconv.data import CenterCrop, Resize, build_dataset, dataset_info


@dataclass(frozen=True)
class ImageBatch:
    """Images ready for a model and for display.

    Attributes:
        inputs: normalised model inputs, ``(B, C, S, S)``.
        pictures: the same images un-normalised, ``(B, C, S, S)`` in ``[0, 1]``.
        names: one short name per image (a file name, or ``test #i``).
        labels: the dataset label of each image, or ``None`` for files.
    """

    inputs: Tensor
    pictures: Tensor
    names: tuple[str, ...]
    labels: tuple[int | None, ...]


def images_from_files(paths: Sequence[str | Path], dataset: str, image_size: int | None = None) -> ImageBatch:
    """Read image files as inputs of a model trained on ``dataset``.

    Args:
        paths: image files.
        dataset: registry name of the training dataset (its channels and normalisation are used).
        image_size: the model's input size; ``None`` for the dataset's native size.

    Raises:
        ValueError: no paths, a bad ``dataset`` or ``image_size``, or a file Pillow cannot read.
        FileNotFoundError: a file does not exist.
    """
    info = dataset_info(dataset)
    size = _image_size(image_size, info.image_size)
    if not paths:
        raise ValueError("paths must list at least one image file")
    mode = "L" if info.in_chans == 1 else "RGB"
    to_square = [Resize(size), CenterCrop(size)]
    pictures = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"image file {path} does not exist")
        try:
            with Image.open(path) as opened:
                pixels = np.asarray(opened.convert(mode), dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"image file {path} could not be read by Pillow: {error}") from error
        image = torch.from_numpy(pixels.copy()).reshape(pixels.shape[0], pixels.shape[1], -1).permute(2, 0, 1)
        for step in to_square:
            image = step(image)
        pictures.append(image.float() / 255)
    batch = torch.stack(pictures)
    mean, std = _statistics(info.mean, info.std)
    return ImageBatch(
        inputs=(batch - mean) / std,
        pictures=batch,
        names=tuple(Path(path).name for path in paths),
        labels=(None,) * len(paths),
    )


def images_from_dataset(
    dataset: str,
    count: int,
    image_size: int | None = None,
    data_dir: str | Path | None = None,
    split: str = "test",
) -> ImageBatch:
    """The first ``count`` images of a dataset split, through its evaluation transforms.

    Raises:
        ValueError: a bad ``count``, ``dataset``, ``split`` or ``image_size`` (the dataset readers'
            own errors for missing or damaged files pass through).
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int; got {count!r}")
    info = dataset_info(dataset)
    images = build_dataset(
        dataset, split, data_dir=data_dir, image_size=image_size, subset=count, train_transforms=False
    )
    inputs, labels = zip(*(images[index] for index in range(count)), strict=True)
    batch = torch.stack(inputs)
    mean, std = _statistics(info.mean, info.std)
    return ImageBatch(
        inputs=batch,
        pictures=(batch * std + mean).clamp(0, 1),
        names=tuple(f"{split} #{index}" for index in range(count)),
        labels=tuple(int(label) for label in labels),
    )


def _image_size(image_size: int | None, native: int) -> int:
    if image_size is None:
        return native
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int or None; got {image_size!r}")
    return image_size


def _statistics(mean: Sequence[float], std: Sequence[float]) -> tuple[Tensor, Tensor]:
    return torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
