"""MobileNetV2 whose convolutions come from a :class:`~fmdconv.models.conv_factory.ConvFactory`.

Sandler, Howard, Zhu, Zhmoginov, Chen. "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
CVPR 2018. The layout and module names are torchvision's (``features.0`` the stem,
``features.{1..17}.conv.*`` the inverted residuals, ``features.18`` the last 1x1 convolution,
``classifier.1``), which the ODConv authors' MobileNetV2 shares, so their checkpoints map key for key.
"""

from __future__ import annotations

from torch import Tensor, nn

from fmdconv.models.conv_factory import ConvFactory, Role
from fmdconv.models.features import FeatureBackbone, FeatureInfo

# expansion t, output channels c, repeats n, first stride s (the paper's Table 2)
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never more than 10% below it.

    The channel rounding of the MobileNet papers' TensorFlow code, used by torchvision and the
    ODConv code alike.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNReLU6(nn.Sequential):
    """Convolution, BatchNorm, ReLU6 (torchvision's ``Conv2dNormActivation``; children 0, 1, 2)."""

    def __init__(
        self,
        conv: ConvFactory,
        role: Role,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__(
            conv(role, in_channels, out_channels, kernel_size, stride, groups),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1x1 expansion (absent when t = 1), 3x3 depthwise, linear 1x1 projection; residual if shapes match."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, expand_ratio: int, conv: ConvFactory
    ) -> None:
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(conv, "block", in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(conv, "block", hidden, hidden, stride=stride, groups=hidden),
            conv("block", hidden, out_channels, 1),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(FeatureBackbone):
    """MobileNetV2; ``conv`` decides which convolutions are dynamic.

    Args:
        conv: the factory that builds every convolution.
        num_classes: size of the classifier output.
        width: width multiplier (1.0, 0.75, 0.5 in the papers); channels are rounded to multiples of 8
            and the last convolution keeps 1280 channels for widths below 1.
        in_chans: input channels (1 for grey images).
        dropout: dropout probability before the classifier (0.2 in torchvision and the ODConv code).
        stem: ``"imagenet"`` (stride-2 first convolution) or ``"cifar"`` (stride 1, for 32x32 images).
    """

    head_names = ("classifier",)

    def __init__(
        self,
        conv: ConvFactory,
        num_classes: int = 1000,
        width: float = 1.0,
        in_chans: int = 3,
        dropout: float = 0.0,
        stem: str = "imagenet",
    ) -> None:
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"unknown stem {stem!r}; accepted: imagenet, cifar")
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        channels = make_divisible(STEM_CHANNELS * width)
        self.num_features = make_divisible(LAST_CHANNELS * max(1.0, width))
        reduction = 2 if stem == "imagenet" else 1
        features: list[nn.Module] = [ConvBNReLU6(conv, "stem", in_chans, channels, stride=reduction)]
        self.feature_info = []
        for expand_ratio, base_channels, repeats, first_stride in INVERTED_RESIDUAL_SETTING:
            out_channels = make_divisible(base_channels * width)
            if first_stride == 2:
                # The map about to be downsampled is the last one at the current stride.
                self.feature_info.append(FeatureInfo(f"features.{len(features) - 1}", channels, reduction))
                reduction *= 2
            for index in range(repeats):
                stride = first_stride if index == 0 else 1
                features.append(InvertedResidual(channels, out_channels, stride, expand_ratio, conv))
                channels = out_channels
        features.append(ConvBNReLU6(conv, "head", channels, self.num_features, kernel_size=1))
        self.feature_info.append(FeatureInfo(f"features.{len(features) - 1}", self.num_features, reduction))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, num_classes))
        self._feature_positions = [int(info.module.split(".")[1]) for info in self.feature_info]
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal (fan_out) static convolutions, unit BN, N(0, 0.01) classifier (torchvision's init)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        linear = self.classifier[1]
        nn.init.normal_(linear.weight, 0, 0.01)
        nn.init.zeros_(linear.bias)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The maps of the five levels (strides 2, 4, 8, 16, 32 with the ImageNet stem)."""
        maps = []
        for position, layer in enumerate(self.features):
            x = layer(x)
            if position in self._feature_positions:
                maps.append(x)
        return maps

    def forward_head(self, x: Tensor) -> Tensor:
        """Global average pool, dropout and the classifier."""
        return self.classifier(x.mean((2, 3)))
