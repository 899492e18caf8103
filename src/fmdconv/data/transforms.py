"""Image transforms on ``(C, H, W)`` tensors.

Every transform is a callable ``Tensor -> Tensor`` that never modifies its input (often a view
into a dataset's storage); its output may share storage with the input. Geometric transforms accept uint8 and
floating-point images and return the dtype they were given; resampling of uint8 images is done
in float32 and rounded back. Random transforms draw from torch's global RNG, so ``torch.manual_seed``
and the per-worker seeding of ``DataLoader`` make them reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Transform = Callable[[Tensor], Tensor]


def _positive_int(value: object, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{argument} must be a positive int, got {value!r}")
    return value


def _size_pair(size: int | Sequence[int], argument: str = "size") -> tuple[int, int]:
    """``size`` as (height, width): an int means a square."""
    if isinstance(size, int) and not isinstance(size, bool):
        return _positive_int(size, argument), size
    if isinstance(size, Sequence) and len(size) == 2:
        return _positive_int(size[0], f"{argument}[0]"), _positive_int(size[1], f"{argument}[1]")
    raise ValueError(
        f"{argument} must be a positive int or a (height, width) pair of positive ints, got {size!r}"
    )


def _range_pair(values: Sequence[float], argument: str, upper: float) -> tuple[float, float]:
    """A (low, high) pair with 0 < low <= high <= upper."""
    if len(values) != 2 or not 0 < values[0] <= values[1] <= upper:
        raise ValueError(
            f"{argument} must be a pair (low, high) with 0 < low <= high <= {upper}, got {values!r}"
        )
    return float(values[0]), float(values[1])


def _check_image(image: Tensor) -> None:
    if not isinstance(image, Tensor) or image.ndim != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be a (C, H, W) tensor, got {shape}")


def _resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize with antialiasing; uint8 images are resampled in float32 and rounded back."""
    if tuple(image.shape[-2:]) == size:
        return image
    source = image.float() if image.dtype == torch.uint8 else image
    resized = F.interpolate(source[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    if image.dtype == torch.uint8:
        return resized.round_().clamp_(0, 255).to(torch.uint8)
    return resized


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


def _randint(high: int) -> int:
    """A uniform integer in [0, high]."""
    return int(torch.randint(high + 1, ()))


class TensorTransform:
    """Base class: subclasses implement ``__call__``; ``repr`` lists the public attributes."""

    def __call__(self, image: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        arguments = ", ".join(
            f"{name}={value!r}" for name, value in vars(self).items() if not name.startswith("_")
        )
        return f"{type(self).__name__}({arguments})"


class Compose(TensorTransform):
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        for position, transform in enumerate(transforms):
            if not callable(transform):
                raise ValueError(f"transforms[{position}] must be callable, got {transform!r}")
        self.transforms = list(transforms)

    def __call__(self, image: Tensor) -> Tensor:
        for transform in self.transforms:
            image = transform(image)
        return image

    def __repr__(self) -> str:
        lines = "".join(f"\n    {transform!r}," for transform in self.transforms)
        return f"Compose([{lines}\n])"


class ToFloat(TensorTransform):
    """Convert a uint8 image to float32 in [0, 1] (divide by 255)."""

    def __call__(self, image: Tensor) -> Tensor:
        _check_image(image)
        if image.dtype != torch.uint8:
            raise ValueError(f"ToFloat expects a uint8 image, got {image.dtype}")
        return image.float().div_(255)


class GrayscaleToRGB(TensorTransform):
    """Repeat the single channel of a grey image three times, for models built for RGB input."""

    def __call__(self, image: Tensor) -> Tensor:
        _check_image(image)
        if image.shape[0] != 1:
            raise ValueError(f"GrayscaleToRGB expects a 1-channel image, got {image.shape[0]} channels")
        return image.repeat(3, 1, 1)


class RandomCrop(TensorTransform):
    """Zero-pad each border by ``padding`` pixels, then crop a random ``size`` window.

    Args:
        size: output size, an int for a square or (height, width).
        padding: pixels of zeros added to every border before cropping (>= 0).
    """

    def __init__(self, size: int | Sequence[int], padding: int = 0) -> None:
        self.size = _size_pair(size)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be an int >= 0, got {padding!r}")
        self.padding = padding

    def __call__(self, image: Tensor) -> Tensor:
        _check_image(image)
        if self.padding:
            image = F.pad(image, (self.padding,) * 4)
        height, width = self.size
        if image.shape[1] < height or image.shape[2] < width:
            raise ValueError(
                f"RandomCrop size {self.size} is larger than the padded image {tuple(image.shape[1:])} "
                f"(padding={self.padding})"
            )
        top = _randint(image.shape[1] - height)
        left = _randint(image.shape[2] - width)
        return image[:, top : top + height, left : left + width]


class RandomHorizontalFlip(TensorTransform):
    """Mirror the image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = p

    def __call__(self, image: Tensor) -> Tensor:
        _check_image(image)
        return image.flip(-1) if float(torch.rand(())) < self.p else image


class RandomResizedCrop(TensorTransform):
    """Crop a random window of random area and aspect ratio, then resize it to ``size``.

    The window covers a fraction of the image area drawn uniformly from ``scale`` and has a
    width/height ratio drawn log-uniformly from ``ratio``. When ten draws in a row do not fit in the
    image, the largest centred window whose ratio lies in ``ratio`` is used.

    Args:
        size: output size, an int for a square or (height, width).
        scale: (low, high) fraction of the image area, 0 < low <= high <= 1.
        ratio: (low, high) width/height ratio, 0 < low <= high.
    """

    ATTEMPTS = 10

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
    ) -> None:
        self.size = _size_pair(size)
        self.scale = _range_pair(scale, "scale", upper=1.0)
        self.ratio = _range_pair(ratio, "ratio", upper=math.inf)

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Draw a window ``(top, left, crop_height, crop_width)`` inside a ``height x width`` image."""
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(self.ATTEMPTS):
            area = height * width * _uniform(*self.scale)
            aspect = math.exp(_uniform(log_low, log_high))
            crop_width = round(math.sqrt(area * aspect))
            crop_height = round(math.sqrt(area / aspect))
            if 0 < crop_width <= width and 0 < crop_height <= height:
                return _randint(height - crop_height), _randint(width - crop_width), crop_height, crop_width
        image_ratio = width / height
        crop_height, crop_width = height, width
        if image_ratio < self.ratio[0]:
            crop_height = round(width / self.ratio[0])
        elif image_ratio > self.ratio[1]:
            crop_width = round(height * self.ratio[1])
        return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width

    def __call__(self, image: Tensor) -> Tensor:
        _check_image(image)
        top, left, crop_height, crop_width = self.crop_box(image.shape[1], image.shape[2])
        return _resize(image[:, top : top + crop_height, left : left + crop_width], self.size)


class Resize(TensorTransform):
    """Resize so the shorter side becomes ``size``, keeping the aspect ratio (bilinear, antialiased).

    The longer side becomes ``int(size * longer / shorter)``.
    """

    def __init__(self, size: int) -> None:
        self.size = _positive_int(size, "size")

    def __call__(self, image: Tensor) -> Tensor:
        _check_image(image)
        height, width = image.shape[1], image.shape[2]
        if height <= width:
            target = (self.size, int(self.size * width / height))
        else:
            target = (int(self.size * height / width), self.size)
        return _resize(image, target)


class CenterCrop(TensorTransform):
    """Crop the central ``size`` window; the image must be at least that large."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _size_pair(size)

    def __call__(self, image: Tensor) -> Tensor:
        _check_image(image)
        height, width = self.size
        if image.shape[1] < height or image.shape[2] < width:
            raise ValueError(f"CenterCrop size {self.size} is larger than the image {tuple(image.shape[1:])}")
        top = (image.shape[1] - height) // 2
        left = (image.shape[2] - width) // 2
        return image[:, top : top + height, left : left + width]


class Normalize(TensorTransform):
    """Subtract ``mean`` and divide by ``std``, per channel, on a floating-point image."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) == 0 or len(mean) != len(std):
            raise ValueError(
                f"mean and std must be non-empty and of equal length, got {len(mean)} and {len(std)}"
            )
        if any(value <= 0 for value in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)
        self._mean = torch.tensor(self.mean).view(-1, 1, 1)
        self._std = torch.tensor(self.std).view(-1, 1, 1)

    def __call__(self, image: Tensor) -> Tensor:
        _check_image(image)
        if not image.is_floating_point():
            raise ValueError(
                f"Normalize expects a floating-point image (apply ToFloat first), got {image.dtype}"
            )
        if image.shape[0] != len(self.mean):
            raise ValueError(
                f"Normalize has {len(self.mean)} channel statistics, the image has {image.shape[0]} channels"
            )
        return (image - self._mean.to(image.dtype)) / self._std.to(image.dtype)
