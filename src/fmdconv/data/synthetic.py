"""A synthetic, learnable image dataset for smoke runs that need no files."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from fmdconv.data.splits import SPLITS, check_split
from fmdconv.data.transforms import Transform

PATTERN_GRID = 4  # each class pattern is a random PATTERN_GRID x PATTERN_GRID image, upsampled


class SyntheticImageDataset(Dataset[tuple[Tensor, int]]):
    """Noisy copies of one smooth random pattern per class, generated on access.

    Each class owns a random ``in_chans x 4 x 4`` pattern drawn from ``seed``, upsampled bilinearly
    to ``image_size``. Sample ``i`` has label ``i % num_classes`` (classes are balanced) and is that
    class's pattern plus Gaussian noise of standard deviation ``noise``, clipped to [0, 1] and stored
    as uint8 like a decoded photo. Images depend only on ``(seed, split, i)``, never on the global
    RNG; the two splits share the class patterns but draw different noise, so a model trained on
    ``"train"`` can be scored on ``"test"``. A few optimizer steps reduce the loss.

    Args:
        length: number of samples.
        num_classes: number of classes.
        image_size: height and width of the images.
        in_chans: number of channels.
        seed: seed of the patterns and the noise.
        split: ``"train"`` or ``"test"``.
        noise: standard deviation of the per-pixel noise, in units of the [0, 1] intensity range.
        transform: applied to each uint8 (in_chans, image_size, image_size) image.
    """

    def __init__(
        self,
        length: int = 1024,
        num_classes: int = 10,
        image_size: int = 32,
        in_chans: int = 3,
        seed: int = 0,
        split: str = "train",
        noise: float = 0.25,
        transform: Transform | None = None,
    ) -> None:
        for name, value in (
            ("length", length),
            ("num_classes", num_classes),
            ("image_size", image_size),
            ("in_chans", in_chans),
        ):
            if value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value}")
        if seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.split_index = SPLITS.index(check_split(split))
        self.length = length
        self.num_classes = num_classes
        self.image_size = image_size
        self.in_chans = in_chans
        self.seed = seed
        self.noise = noise
        self.transform = transform
        pattern_rng = np.random.default_rng([seed])
        patterns = pattern_rng.random((num_classes, in_chans, PATTERN_GRID, PATTERN_GRID), dtype=np.float32)
        self.patterns = torch.from_numpy(patterns)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} is out of range for a dataset of length {self.length}")
        index %= self.length
        label = index % self.num_classes
        size = (self.image_size, self.image_size)
        pattern = F.interpolate(
            self.patterns[label : label + 1], size=size, mode="bilinear", align_corners=False
        )[0]
        noise_rng = np.random.default_rng([self.seed, self.split_index, index])
        noise = torch.from_numpy(noise_rng.standard_normal(pattern.shape, dtype=np.float32))
        image = (pattern + self.noise * noise).clamp(0, 1).mul(255).round().to(torch.uint8)
        if self.transform is not None:
            image = self.transform(image)
        return image, label
