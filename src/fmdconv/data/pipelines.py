"""The training and evaluation transform pipelines of each dataset (the papers' augmentation).

- CIFAR-10/100: train = pad-4 random 32x32 crop + horizontal flip; eval = nothing but the
  normalisation (the FMDConv and ODConv CIFAR recipe).
- Fashion-MNIST: train = pad-2 random 28x28 crop + horizontal flip (the CIFAR recipe scaled to
  the smaller images; clothes are close to left-right symmetric, so the flip keeps labels valid);
  eval = normalisation only.
- ImageNet: train = RandomResizedCrop(224) + flip; eval = Resize(256) + CenterCrop(224).
- Synthetic: no augmentation.

Every pipeline ends with ToFloat and Normalize(mean, std) of the dataset. For the small-image
datasets an ``image_size`` other than the native one appends a bilinear Resize after the crop and
flip (e.g. 224 to feed CIFAR to a network with the ImageNet stem). For ImageNet it sets the crop
size, the eval resize keeping the 256/224 ratio.
"""

from __future__ import annotations

from fmdconv.data.registry import DatasetInfo, dataset_info
from fmdconv.data.transforms import (
    CenterCrop,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    TensorTransform,
    ToFloat,
)

# Border padding of the training random crop; a small-image dataset absent here (synthetic) is not augmented.
SMALL_IMAGE_CROP_PADDING = {"cifar10": 4, "cifar100": 4, "fashion_mnist": 2}
IMAGENET_EVAL_RESIZE_RATIO = 256 / 224


def _small_image_pipeline(info: DatasetInfo, augment: bool, image_size: int) -> list[TensorTransform]:
    padding = SMALL_IMAGE_CROP_PADDING.get(info.name)
    steps: list[TensorTransform] = []
    if augment and padding is not None:
        steps += [RandomCrop(info.image_size, padding=padding), RandomHorizontalFlip()]
    steps.append(ToFloat())
    if image_size != info.image_size:
        steps.append(Resize(image_size))
    return steps


def _imagenet_pipeline(augment: bool, image_size: int) -> list[TensorTransform]:
    if augment:
        return [ToFloat(), RandomResizedCrop(image_size), RandomHorizontalFlip()]
    return [ToFloat(), Resize(round(image_size * IMAGENET_EVAL_RESIZE_RATIO)), CenterCrop(image_size)]


def build_transforms(dataset: str, train: bool, image_size: int | None = None) -> Compose:
    """The transform pipeline of ``dataset``'s recipe, from a decoded uint8 image to a normalised float one.

    Args:
        dataset: registry name (see ``DATASETS``).
        train: True for the augmenting training pipeline, False for the deterministic eval one.
        image_size: side length of the output images; None keeps the dataset's native size.

    Raises:
        ValueError: unknown ``dataset`` or ``image_size`` not a positive int.
    """
    info = dataset_info(dataset)
    size = info.image_size if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    if info.name == "imagenet":
        steps = _imagenet_pipeline(train, size)
    else:
        steps = _small_image_pipeline(info, train, size)
    return Compose([*steps, Normalize(info.mean, info.std)])
