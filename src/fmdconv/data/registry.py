"""The datasets fmdconv knows by name, with the facts a model and a transform pipeline need."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about one dataset.

    Attributes:
        name: registry name.
        num_classes: number of classes of the standard dataset.
        in_chans: channels of a decoded image.
        image_size: native side length of the images the recipes start from (ImageNet: the
            224-pixel training crop, its images having no single size).
        mean: per-channel mean of the training images scaled to [0, 1].
        std: per-channel standard deviation of the training images scaled to [0, 1].
    """

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        # Fashion-MNIST statistics: mean and (population) standard deviation over all pixels of
        # the 60,000 training images divided by 255, computed once in float64 from
        # /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz: 0.28604060, 0.35302424.
        DatasetInfo(
            "fashion_mnist", num_classes=10, in_chans=1, image_size=28, mean=(0.2860,), std=(0.3530,)
        ),
        # CIFAR statistics: per-channel mean and standard deviation over the training pixels.
        DatasetInfo(
            "cifar10",
            num_classes=10,
            in_chans=3,
            image_size=32,
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
        ),
        DatasetInfo(
            "cifar100",
            num_classes=100,
            in_chans=3,
            image_size=32,
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
        ),
        # ImageNet statistics: the standard training-set values both papers' code uses.
        DatasetInfo(
            "imagenet",
            num_classes=1000,
            in_chans=3,
            image_size=224,
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
        ),
        # Synthetic statistics: class patterns uniform on [0, 1] plus noise of std 0.25, clipped,
        # measured at about 0.51 +- 0.30 per channel over 500 generated images.
        DatasetInfo("synthetic", num_classes=10, in_chans=3, image_size=32, mean=(0.5,) * 3, std=(0.3,) * 3),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of ``name``; ValueError listing the known names if there is none."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}") from None
