"""A dataset whose decoded images all sit in memory as one uint8 tensor."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from fmdconv.data.errors import DatasetFormatError
from fmdconv.data.transforms import Transform


class TensorImageDataset(Dataset[tuple[Tensor, int]]):
    """Images held as a ``(N, C, H, W)`` uint8 tensor with ``N`` integer labels.

    ``dataset[i]`` returns ``(transform(images[i]), labels[i])``; without a transform the image is
    the uint8 ``(C, H, W)`` tensor itself (a view, not a copy).

    Args:
        images: uint8 tensor of shape (N, C, H, W).
        labels: integer tensor of shape (N,).
        transform: applied to each image on access.
    """

    def __init__(self, images: Tensor, labels: Tensor, transform: Transform | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                "images must be a uint8 tensor of shape (N, C, H, W), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
            raise ValueError(
                f"labels must be an integer tensor of shape ({images.shape[0]},), "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.long()
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


def check_label_range(labels: Tensor, num_classes: int, source: Path) -> None:
    """Raise DatasetFormatError naming ``source`` if a label lies outside ``0..num_classes-1``."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise DatasetFormatError(source, f"label {bad} is outside 0..{num_classes - 1}")
