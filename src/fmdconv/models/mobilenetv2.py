"""MobileNetV2 whose convolutions come from a :class:`~fmdconv.models.conv_factory.ConvFactory`.

Sandler, Howard, Zhu, Zhmoginov, Chen. "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
CVPR 2018. The layout and module names are torchvision's (``features.0`` the stem,
``features.{1..17}.conv.*`` the inverted residuals, ``features.18`` the last 1x1 convolution,
``classifier.1``), which the ODConv authors' MobileNetV2 shares, so their checkpoints map key for key.

With CondConv's layout (Yang et al., NeurIPS 2019) each of the final 6 blocks has a ``routing``
function whose weights its convolutions share, and ``classifier.1`` is a
:class:`~fmdconv.layers.DynamicLinear` that takes the routing weights of the last block
(``features.17``): the ODConv paper's CondConv counts leave no parameters for a routing of its own.
"""

from __future__ import annotations

from torch import Tensor, nn

from fmdconv.layers import DynamicConv2d
from fmdconv.layers.helpers import renamed_keyword
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
LATE_BLOCKS = 6  # the final blocks, where the CondConv paper puts its experts (role "late_block")


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
        factory: ConvFactory,
        role: Role,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        routed: bool = False,
    ) -> None:
        super().__init__(
            factory(role, in_channels, out_channels, kernel_size, stride, groups, routed),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


def _forward_routed(layers: nn.Sequential, x: Tensor, routing: Tensor) -> Tensor:
    """Run ``layers`` on ``x``, handing the block's routing weights to every dynamic convolution."""
    for layer in layers:
        if isinstance(layer, nn.Sequential):
            x = _forward_routed(layer, x, routing)
        elif isinstance(layer, DynamicConv2d):
            x = layer(x, routing)
        else:
            x = layer(x)
    return x


class InvertedResidual(nn.Module):
    """1x1 expansion (absent when t = 1), 3x3 depthwise, linear 1x1 projection; residual if shapes match.

    ``routing`` is the block's shared routing function (CondConv's layout), or None.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: int,
        factory: ConvFactory,
        role: Role = "block",
    ) -> None:
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.routing = factory.block_routing(role, in_channels)
        routed = self.routing is not None
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(factory, role, in_channels, hidden, kernel_size=1, routed=routed))
        layers += [
            ConvBNReLU6(factory, role, hidden, hidden, stride=stride, groups=hidden, routed=routed),
            factory(role, hidden, out_channels, 1, routed=routed, expanded=expand_ratio != 1),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor, routing: Tensor | None = None) -> Tensor:
        """``routing``: this block's routing weights when the caller has already computed them."""
        if self.routing is None:
            out = self.conv(x)
        else:
            out = _forward_routed(self.conv, x, self.routing(x) if routing is None else routing)
        return x + out if self.use_residual else out


class MobileNetV2(FeatureBackbone):
    """MobileNetV2; ``factory`` decides which convolutions are dynamic.

    Args:
        factory: the factory that builds every convolution.
        num_classes: size of the classifier output.
        width: width multiplier (1.0, 0.75, 0.5 in the papers); channels are rounded to multiples of 8
            and the last convolution keeps 1280 channels for widths below 1.
        in_chans: input channels (1 for grey images).
        dropout: dropout probability before the classifier (0.2 in torchvision and the ODConv code).
        stem: ``"imagenet"`` (stride-2 first convolution) or ``"cifar"`` (stride 1, for 32x32 images).
    """

    head_names = ("classifier",)

    @renamed_keyword("conv", "factory")
    def __init__(
        self,
        factory: ConvFactory,
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
        features: list[nn.Module] = [ConvBNReLU6(factory, "stem", in_chans, channels, stride=reduction)]
        self.feature_info = []
        # features.0 is the stem, so block k is features.k; the final LATE_BLOCKS of them are "late".
        first_late_block = sum(setting[2] for setting in INVERTED_RESIDUAL_SETTING) - LATE_BLOCKS + 1
        for expand_ratio, base_channels, repeats, first_stride in INVERTED_RESIDUAL_SETTING:
            out_channels = make_divisible(base_channels * width)
            if first_stride == 2:
                # The map about to be downsampled is the last one at the current stride.
                self.feature_info.append(FeatureInfo(f"features.{len(features) - 1}", channels, reduction))
                reduction *= 2
            for index in range(repeats):
                stride = first_stride if index == 0 else 1
                role: Role = "late_block" if len(features) >= first_late_block else "block"
                features.append(InvertedResidual(channels, out_channels, stride, expand_ratio, factory, role))
                channels = out_channels
        features.append(ConvBNReLU6(factory, "head", channels, self.num_features, kernel_size=1))
        self.feature_info.append(FeatureInfo(f"features.{len(features) - 1}", self.num_features, reduction))
        self.features = nn.Sequential(*features)
        # With shared routing, the dynamic classifier takes the last block's routing weights.
        last_block = features[-2]
        self._classifier_routed = (
            factory.shared_routing and factory.is_dynamic("classifier") and last_block.routing is not None
        )
        classifier = factory.linear(self.num_features, num_classes, routed=self._classifier_routed)
        self.classifier = nn.Sequential(nn.Dropout(dropout), classifier)
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

    def forward_head(self, x: Tensor, routing: Tensor | None = None) -> Tensor:
        """Global average pool, dropout and the classifier.

        ``routing``: with CondConv's layout the classifier takes the routing weights of the last
        block (``features.17``), which only :meth:`forward` has; pass them here to call this alone.
        """
        if self._classifier_routed and routing is None:
            raise ValueError(
                "this MobileNetV2's classifier takes the routing of features.17: call the model itself, "
                "or pass forward_head(x, routing=model.features[17].routing(input of features.17))"
            )
        pooled = self.classifier[0](x.mean((2, 3)))
        return self.classifier[1](pooled) if routing is None else self.classifier[1](pooled, routing)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """Logits, or the feature maps after :meth:`to_features`; hands features.17's routing to a
        classifier that shares it."""
        if self.out_indices is not None or not self._classifier_routed:
            return super().forward(x)
        last_block = len(self.features) - 2
        x = self.features[:last_block](x)
        routing = self.features[last_block].routing(x)
        x = self.features[last_block + 1 :](self.features[last_block](x, routing))
        return self.forward_head(x, routing)
