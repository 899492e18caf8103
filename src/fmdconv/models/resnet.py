"""ResNet-18/34/50/101 whose convolutions come from a :class:`~fmdconv.models.conv_factory.ConvFactory`.

He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition", CVPR 2016. The layout and
module names are torchvision's (``conv1``, ``bn1``, ``layer{1..4}.{j}.conv{1,2,3}``,
``layer{1..4}.{j}.downsample.{0,1}``, ``fc``), which are also those of the ODConv, FMDConv and DyConv
authors' ResNets, so their checkpoints map key for key (see :mod:`fmdconv.compat`). As in their code,
a dropout layer (``dropout``, no parameters) sits before ``fc``.

``attention`` (``se``, ``cbam``, ``eca``; :mod:`fmdconv.layers.feature_attention`) puts that module
on every block's residual branch after its last BatchNorm, before the addition, as the SE, CBAM and
ECA papers do (module ``layer{i}.{j}.attention``).
"""

from __future__ import annotations

from torch import Tensor, nn

from fmdconv.layers.feature_attention import create_feature_attention
from fmdconv.layers.helpers import renamed_keyword
from fmdconv.models.conv_factory import ConvFactory
from fmdconv.models.features import FeatureBackbone, FeatureInfo

STEMS = ("imagenet", "cifar")
STAGE_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or projection) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        factory: ConvFactory,
        attention: str | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = factory("block", in_planes, planes, 3, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = factory("block", planes, planes, 3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attention = None if attention is None else create_feature_attention(attention, planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.attention is not None:
            out = self.attention(out)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, as torchvision's "ResNet v1.5"), 1x1 expand; ResNet-50/101."""

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        factory: ConvFactory,
        attention: str | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = factory("block", in_planes, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = factory("block", planes, planes, 3, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = factory("block", planes, planes * self.expansion, 1)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.attention = (
            None if attention is None else create_feature_attention(attention, planes * self.expansion)
        )
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.attention is not None:
            out = self.attention(out)
        return self.relu(out + identity)


class ResNet(FeatureBackbone):
    """A ResNet; ``factory`` decides which convolutions are dynamic.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        depths: number of blocks in each of the four stages.
        factory: the factory that builds every convolution.
        num_classes: size of the classifier output.
        stem: ``"imagenet"`` (7x7 stride-2 convolution and 3x3 stride-2 max-pool) or ``"cifar"``
            (3x3 stride-1 convolution, no max-pool, for 32x32 images).
        in_chans: input channels (1 for grey images).
        widths: channels of the four stages (before the bottleneck expansion).
        dropout: dropout probability before ``fc`` (the papers use 0.1-0.2 on ImageNet).
        attention: ``se``, ``cbam`` or ``eca`` on every block's residual branch, or None.
    """

    head_names = ("avgpool", "dropout", "fc")

    @renamed_keyword("conv", "factory")
    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        depths: tuple[int, int, int, int],
        factory: ConvFactory,
        num_classes: int = 1000,
        stem: str = "imagenet",
        in_chans: int = 3,
        widths: tuple[int, int, int, int] = STAGE_WIDTHS,
        dropout: float = 0.0,
        attention: str | None = None,
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; accepted: {', '.join(STEMS)}")
        if factory.shared_routing:
            raise ValueError(
                "shared_routing: ResNet's dynamic convolutions route each on its own; "
                "blocks with shared routing are MobileNetV2's"
            )
        stem_width = widths[0]
        if stem == "imagenet":
            self.conv1 = factory("stem", in_chans, stem_width, 7, stride=2)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = factory("stem", in_chans, stem_width, 3)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)

        conv_stride, pool_stride = (2, 2) if stem == "imagenet" else (1, 1)
        self.feature_info = [FeatureInfo("relu", stem_width, conv_stride)]
        reduction = conv_stride * pool_stride
        self.in_planes = stem_width
        for index, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            stage_stride = 1 if index == 0 else 2
            reduction *= stage_stride
            name = f"layer{index + 1}"
            setattr(self, name, self._make_stage(block, width, depth, stage_stride, factory, attention))
            self.feature_info.append(FeatureInfo(name, width * block.expansion, reduction))

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.num_features = widths[-1] * block.expansion
        self.fc = factory.linear(self.num_features, num_classes)
        self._init_weights()

    def _make_stage(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        depth: int,
        stride: int,
        factory: ConvFactory,
        attention: str | None,
    ) -> nn.Sequential:
        out_planes = planes * block.expansion
        downsample = None
        if stride != 1 or self.in_planes != out_planes:
            downsample = nn.Sequential(
                factory("downsample", self.in_planes, out_planes, 1, stride), nn.BatchNorm2d(out_planes)
            )
        blocks = [block(self.in_planes, planes, stride, downsample, factory, attention)]
        self.in_planes = out_planes
        blocks += [block(out_planes, planes, 1, None, factory, attention) for _ in range(1, depth)]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        """He-normal (fan_out) static convolutions, unit BN, N(0, 0.01) classifier (the authors' init).

        Dynamic layers initialise themselves the same way (:meth:`DynamicConv2d.reset_parameters`).
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The maps of the five levels: stem (before the max-pool), layer1 ... layer4."""
        x = self.relu(self.bn1(self.conv1(x)))
        maps = [x]
        x = self.maxpool(x)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            maps.append(x)
        return maps

    def forward_head(self, x: Tensor) -> Tensor:
        """Global average pool, dropout and the classifier."""
        return self.fc(self.dropout(self.avgpool(x).flatten(1)))
