"""Datasets, tensor transforms and loaders for training and evaluating fmdconv models.

Start from :func:`build_dataset` (a dataset by name with its recipe's transforms) and
:func:`build_loader`; :data:`DATASETS` holds each dataset's classes, channels, size and
normalisation statistics. See ``docs/data.md``.
"""

from fmdconv.data.builders import build_dataset
from fmdconv.data.cifar import CIFAR10, CIFAR100, CifarDataset
from fmdconv.data.errors import DatasetFormatError, DatasetNotFoundError
from fmdconv.data.fashion_mnist import FashionMNIST
from fmdconv.data.idx import read_idx_ubyte
from fmdconv.data.image_folder import ImageFolderDataset
from fmdconv.data.loaders import DistributedEvalSampler, build_loader
from fmdconv.data.pipelines import build_transforms
from fmdconv.data.registry import DATASETS, DatasetInfo, dataset_info
from fmdconv.data.splits import SPLITS
from fmdconv.data.synthetic import SyntheticImageDataset
from fmdconv.data.tensor_dataset import TensorImageDataset
from fmdconv.data.transforms import (
    CenterCrop,
    Compose,
    GrayscaleToRGB,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    TensorTransform,
    ToFloat,
    Transform,
)

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "DATASETS",
    "SPLITS",
    "CenterCrop",
    "CifarDataset",
    "Compose",
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DistributedEvalSampler",
    "FashionMNIST",
    "GrayscaleToRGB",
    "ImageFolderDataset",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "SyntheticImageDataset",
    "TensorImageDataset",
    "TensorTransform",
    "ToFloat",
    "Transform",
    "build_dataset",
    "build_loader",
    "build_transforms",
    "dataset_info",
    "read_idx_ubyte",
]
