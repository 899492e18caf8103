"""Building a dataset, with its recipe's transforms, from its registry name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset, Subset

from fmdconv.data.cifar import CIFAR10, CIFAR100
from fmdconv.data.fashion_mnist import FashionMNIST
from fmdconv.data.image_folder import ImageFolderDataset
from fmdconv.data.pipelines import build_transforms
from fmdconv.data.registry import dataset_info
from fmdconv.data.splits import check_split
from fmdconv.data.synthetic import SyntheticImageDataset
from fmdconv.data.transforms import Transform

ImageDataset = Dataset[tuple[Tensor, int]]

FILE_READERS: dict[str, Callable[[str, str | Path | None, Transform], ImageDataset]] = {
    "fashion_mnist": FashionMNIST,
    "cifar10": CIFAR10,
    "cifar100": CIFAR100,
    "imagenet": ImageFolderDataset,
}
SYNTHETIC_LENGTHS = {"train": 2048, "test": 512}


def build_dataset(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    subset: int | None = None,
    train_transforms: bool | None = None,
    seed: int = 0,
) -> ImageDataset:
    """A dataset by registry name, its images passed through the recipe's transforms.

    Args:
        name: one of ``DATASETS``.
        split: ``"train"`` or ``"test"`` (ImageNet's ``val/`` folder).
        data_dir: where the files are; Fashion-MNIST defaults to the Debian package's folder, the
            other file-based datasets require it, ``synthetic`` takes none.
        image_size: side length of the output images; None keeps the native size.
        subset: keep only the first ``subset`` images (in the dataset's own order: for a class-folder
            dataset that is class by class).
        train_transforms: use the augmenting training pipeline; None means "if split is train".
        seed: seed of the synthetic images (unused by the file-based datasets, whose augmentation
            draws from torch's RNG).

    Raises:
        ValueError: unknown ``name`` or ``split``, bad ``image_size`` or ``subset``, or a
            ``data_dir`` given for ``synthetic``.
        DatasetNotFoundError: the files are not where the reader looked.
        DatasetFormatError: a file is corrupt or truncated.
    """
    info = dataset_info(name)
    split = check_split(split)
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise ValueError(f"subset must be a positive int or None, got {subset!r}")
    transform = build_transforms(
        name, split == "train" if train_transforms is None else train_transforms, image_size
    )
    if name in FILE_READERS:
        dataset = FILE_READERS[name](split, data_dir, transform)
    elif data_dir is not None:
        raise ValueError(f"data_dir must be None for {name}, which reads no files; got {data_dir!r}")
    else:
        dataset = SyntheticImageDataset(
            length=SYNTHETIC_LENGTHS[split],
            num_classes=info.num_classes,
            image_size=info.image_size,
            in_chans=info.in_chans,
            seed=seed,
            split=split,
            transform=transform,
        )
    if subset is None:
        return dataset
    if subset > len(dataset):
        raise ValueError(f"subset must be at most the {len(dataset)} images of {name} {split}, got {subset}")
    return Subset(dataset, range(subset))
