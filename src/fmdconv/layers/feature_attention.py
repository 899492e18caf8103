"""Attention modules that re-weight feature maps rather than kernels: SE, CBAM and ECA.

The ODConv paper (Li et al., ICLR 2022, Table 3) compares ODConv with them on ResNet-18/50. Each
module maps a (B, C, H, W) map to one of the same shape; a residual block applies it to its branch
before the addition, as the three papers do (see :mod:`fmdconv.models.resnet`).

- SE: Hu, Shen, Sun. "Squeeze-and-Excitation Networks", CVPR 2018. ``x * σ(FC(ReLU(FC(GAP(x)))))``,
  the FCs C -> C/r -> C with biases, r = 16.
- CBAM: Woo, Park, Lee, Kweon. "CBAM: Convolutional Block Attention Module", ECCV 2018. A channel
  gate (one MLP C -> C/r -> C with biases shared by the average- and max-pooled vectors, summed,
  sigmoid; r = 16), then a spatial gate (the channel-wise mean and max maps, a 7x7 convolution 2 -> 1
  without bias, BatchNorm, sigmoid), as in the authors' code.
- ECA: Wang, Wu, Zhu, Li, Zuo, Hu. "ECA-Net: Efficient Channel Attention for Deep Convolutional
  Neural Networks", CVPR 2020. ``x * σ(conv1d_k(GAP(x)))`` across channels, one k-tap kernel without
  bias; k = |log2(C) / 2 + 1 / 2| rounded to the odd number (:func:`eca_kernel_size`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmdconv.layers.helpers import check_int, is_int_at_least


def _reduced(channels: int, reduction: int, name: str) -> int:
    if not is_int_at_least(channels, 1):
        raise ValueError(f"{name}: channels must be a positive int, got {channels!r}")
    return max(1, channels // check_int(name, "reduction", reduction))


def _check_map(x: Tensor, channels: int, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name}: expected an input (B, {channels}, H, W), got shape {tuple(x.shape)}")


class SqueezeExcitation(nn.Module):
    """SE (Hu et al., CVPR 2018): channel gates from the pooled map through FC-ReLU-FC-sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _reduced(channels, reduction, type(self).__name__)
        self.channels = channels
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        _check_map(x, self.channels, type(self).__name__)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return x * gate[:, :, None, None]


class CBAM(nn.Module):
    """CBAM (Woo et al., ECCV 2018): a channel gate, then a spatial gate, as in the authors' code."""

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        hidden = _reduced(channels, reduction, type(self).__name__)
        if not is_int_at_least(spatial_kernel, 1) or spatial_kernel % 2 == 0:
            raise ValueError(f"CBAM: spatial_kernel must be an odd int >= 1, got {spatial_kernel!r}")
        self.channels = channels
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)
        self.spatial_norm = nn.BatchNorm2d(1)

    def forward(self, x: Tensor) -> Tensor:
        _check_map(x, self.channels, type(self).__name__)
        channel_logits = self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3)))
        x = x * torch.sigmoid(channel_logits)[:, :, None, None]
        descriptors = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial_norm(self.spatial(descriptors)))


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel size: ``t = int(|log2(C) + b| / gamma)``, then the odd one of t, t + 1."""
    t = int(abs(math.log2(channels) + b) / gamma)
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """ECA (Wang et al., CVPR 2020): a k-tap 1-D convolution across the pooled channels, sigmoid."""

    def __init__(self, channels: int, kernel_size: int | None = None) -> None:
        super().__init__()
        _reduced(channels, 1, type(self).__name__)
        kernel_size = eca_kernel_size(channels) if kernel_size is None else kernel_size
        if not is_int_at_least(kernel_size, 1) or kernel_size % 2 == 0:
            raise ValueError(f"ECA: kernel_size must be an odd int >= 1, got {kernel_size!r}")
        self.channels = channels
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        _check_map(x, self.channels, type(self).__name__)
        gate = torch.sigmoid(self.conv(x.mean((2, 3))[:, None, :]))[:, 0]
        return x * gate[:, :, None, None]


FEATURE_ATTENTION_TYPES: dict[str, Callable[[int], nn.Module]] = {
    "se": SqueezeExcitation,
    "cbam": CBAM,
    "eca": ECA,
}
FEATURE_ATTENTIONS: tuple[str, ...] = tuple(FEATURE_ATTENTION_TYPES)


def create_feature_attention(name: str, channels: int) -> nn.Module:
    """The attention module ``name`` (``se``, ``cbam``, ``eca``), the papers' settings, on ``channels``."""
    if name not in FEATURE_ATTENTION_TYPES:
        raise ValueError(f"unknown attention {name!r}; accepted: {', '.join(FEATURE_ATTENTIONS)}")
    return FEATURE_ATTENTION_TYPES[name](channels)
