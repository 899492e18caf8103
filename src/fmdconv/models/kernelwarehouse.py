"""KernelWarehouse backbones: which convolutions share which warehouse, and the per-ratio settings.

Li, Yao. "KernelWarehouse: Rethinking the Design of Dynamic Convolution", ICML 2024. A backbone built
with ``conv="kw"`` first gets a :class:`KWSlot` (the convolution's arguments, no parameters) for
every convolution the method replaces; :func:`share_warehouses` then groups the slots into
warehouses by their place in the network, sizes every :class:`~fmdconv.layers.Warehouse` from the
kernels it serves, and puts a :class:`~fmdconv.layers.KWConv2d` referencing it in each slot's place.
The warehouses are registered once, as ``model.warehouses`` (a ModuleList in the authors' order), so
they are counted and saved once. The rules are those of the authors' code (OSVAI/KernelWarehouse;
docs/models.md):

ResNet
    Every block convolution and every stride-2 downsample is replaced; the stem, the classifier and
    stride-1 downsamples stay static. Stage s (``layer{s+1}``) has one warehouse; the first
    convolution of its first block and its downsample take the previous stage's (ResNet-50's very
    first ``layer1.0.conv1``, which has no previous stage, stays static).
MobileNetV2
    Every convolution, the stem and the depthwise ones included. The blocks are grouped into the
    stages 1-6 of the authors' ``kw_stage_setting``; a stage's first block takes the previous
    stage's warehouses. Each stage has one warehouse for its depthwise and one for its 1x1
    convolutions (4x and 1/2x: one for the expansions and one for the projections); the stem has its
    own. 1/2x is the authors' separate ``kw1d2x_mobilenetv2``: the 1x1 convolutions of stages 1-5
    stay static, the classifier is a :class:`~fmdconv.layers.kernelwarehouse.KWLinear` with its own
    warehouse, the attention is narrower (reduction 1/32), and only the 1x1 and classifier
    warehouses are at half the cells (the 1x1 ones with half cell planes too, the classifier's
    cells taking 1/40 of its input features); the stem and depthwise warehouses stay at 1x.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from torch import Tensor, nn

from fmdconv.layers import KWConv2d, KWLinear, Warehouse

KW_RATIOS = ("1/4", "1/2", "1", "2", "4")
# create_model options of conv="kw" besides kw_ratio (the fields of KWSettings).
KW_SETTING_OPTIONS = ("cell_num_ratio", "cell_plane_ratio", "nonlocal_basis_ratio", "reduction")
KW_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2")
MOBILENET_V2_RATIOS = ("1/2", "1", "4")
# The authors' MobileNetV2 stages of the seven inverted-residual settings, and its tau schedule length.
MOBILENET_V2_STAGES = (1, 2, 3, 4, 5, 6, 6)
MOBILENET_V2_WARM_EPOCHS = 15.0
# The authors' MobileNetV2 1/2x: the stages whose 1x1 convolutions are dynamic, its attention
# reduction, and the classifier cells' share of the input features (32 of 1280).
MOBILENET_V2_HALF_POINTWISE_STAGES = (6,)
MOBILENET_V2_HALF_REDUCTION = 0.03125
MOBILENET_V2_HALF_CLASSIFIER_IN_RATIO = 0.025
# ResNet-50's 1/2x factorises the other layers' cell logits through a basis (``nonlocal_basis_ratio``).
RESNET50_BASIS_RATIO = 0.0625


@dataclass(frozen=True)
class KWSettings:
    """The options of a KernelWarehouse backbone at one ratio (the authors' configs)."""

    ratio: str
    cell_num_ratio: float
    cell_plane_ratio: float  # of both the input and the output cell planes (1/2 below 1x)
    nonlocal_basis_ratio: float = 1.0
    reduction: float = 0.0625


def parse_ratio(kw_ratio: object) -> str:
    """``kw_ratio`` as one of :data:`KW_RATIOS` (numbers 0.25 ... 4 and strings "1/4" ... "4")."""
    try:
        text = str(Fraction(str(kw_ratio)))  # type: ignore[arg-type]
    except (ValueError, ZeroDivisionError):
        text = ""
    if isinstance(kw_ratio, bool) or text not in KW_RATIOS:
        raise ValueError(
            f"kw_ratio must be one of {', '.join(KW_RATIOS)} (or 0.25, 0.5, ...), got {kw_ratio!r}"
        )
    return text


def kw_settings(model: str, kw_ratio: object = 1, **overrides: float) -> KWSettings:
    """The authors' settings for ``model`` at ``kw_ratio``: cell_num_ratio = the ratio; below 1x the
    cell planes are halved (and ResNet-50 factorises the nonlocal logits, basis ratio 1/16;
    MobileNetV2 1/2x has reduction 1/32 and its own layout, see the module docstring).

    ``overrides``: ``cell_num_ratio``, ``cell_plane_ratio``, ``nonlocal_basis_ratio``, ``reduction``.
    """
    if model not in KW_MODELS:
        raise ValueError(f"conv='kw' builds {', '.join(KW_MODELS)}, got model {model!r}")
    ratio = parse_ratio(kw_ratio)
    if model == "mobilenet_v2" and ratio not in MOBILENET_V2_RATIOS:
        raise ValueError(
            f"mobilenet_v2 with conv='kw' takes kw_ratio {', '.join(MOBILENET_V2_RATIOS)} (the authors' "
            f"layouts), got {kw_ratio!r}"
        )
    value = float(Fraction(ratio))
    below = value < 1
    deep = model in ("resnet50", "resnet101")
    settings = {
        "cell_num_ratio": value,
        "cell_plane_ratio": 0.5 if below else 1.0,
        "nonlocal_basis_ratio": RESNET50_BASIS_RATIO if below and deep else 1.0,
        "reduction": MOBILENET_V2_HALF_REDUCTION if model == "mobilenet_v2" and below else 0.0625,
    }
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise ValueError(f"unknown KernelWarehouse options {unknown}; accepted: {', '.join(settings)}")
    settings.update(overrides)
    return KWSettings(ratio, **settings)


class KWSlot(nn.Module):
    """The place of a KernelWarehouse convolution before its warehouse exists (no parameters).

    :func:`share_warehouses` replaces every slot; a slot that is called says so.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        groups: int,
        linear: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.groups = stride, padding, groups
        self.linear = linear  # a fully connected layer (a KWLinear), not a convolution

    @property
    def kernel_shape(self) -> tuple[int, int, int, int]:
        k = self.kernel_size
        return (self.out_channels, self.in_channels // self.groups, k, k)

    def static(self) -> nn.Conv2d:
        """The static convolution for a slot the method keeps static (He-normal, fan_out)."""
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            groups=self.groups,
            bias=False,
        )
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        return conv

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("a KWSlot is replaced by share_warehouses(); build KW models with create_model")


def _resnet_warehouse(model: nn.Module, name: str, slot: KWSlot) -> str | None:
    """``stage{s}`` for a ResNet slot ``layer{s+1}.{j}.conv{c}`` / ``.downsample.0``; None: static."""
    parts = name.split(".")
    stage, block = int(parts[0][len("layer") :]) - 1, int(parts[1])
    if parts[2] == "downsample":
        return None if slot.stride == 1 else f"stage{stage - 1}"
    if block == 0 and parts[2] == "conv1":
        bottleneck = hasattr(model.get_submodule(".".join(parts[:2])), "conv3")
        previous = stage - 1 if bottleneck else max(stage - 1, 0)
        return None if previous < 0 else f"stage{previous}"
    return f"stage{stage}"


def _mobilenet_v2_stages() -> list[int]:
    """The warehouse stage of each inverted residual block (``features.1`` ... ``features.17``)."""
    from fmdconv.models.mobilenetv2 import INVERTED_RESIDUAL_SETTING

    stages = []
    for index, (_, _, repeats, _) in enumerate(INVERTED_RESIDUAL_SETTING):
        stage = MOBILENET_V2_STAGES[index]
        handover = index > 0 and stage != MOBILENET_V2_STAGES[index - 1]
        stages += [stage - 1 if handover else stage] + [stage] * (repeats - 1)
    return stages


def _mobilenet_v2_warehouse(name: str, slot: KWSlot, ratio: str) -> str | None:
    """The warehouse of a MobileNetV2 slot at ``ratio``: ``stage0_conv`` (stem), ``stage{s}_dw`` /
    ``_pw`` (4x and 1/2x: ``_pw0`` expansions, ``_pw1`` projections and the last 1x1 convolution),
    ``classifier`` (1/2x); None: static (1/2x: the 1x1 convolutions outside stage 6)."""
    if slot.linear:
        return "classifier"
    separate_pointwise = ratio != "1"
    parts = name.split(".")
    position = int(parts[1])
    blocks = _mobilenet_v2_stages()
    if position == 0:
        return "stage0_conv"
    if position > len(blocks):  # the last 1x1 convolution, in the last stage
        return (
            f"stage{MOBILENET_V2_STAGES[-1]}_pw1"
            if separate_pointwise
            else f"stage{MOBILENET_V2_STAGES[-1]}_pw"
        )
    stage = blocks[position - 1]
    if slot.groups > 1:
        return f"stage{stage}_dw"
    if ratio == "1/2" and stage not in MOBILENET_V2_HALF_POINTWISE_STAGES:
        return None
    if not separate_pointwise:
        return f"stage{stage}_pw"
    expansion = parts[3] == "0" and len(parts) == 5  # features.k.conv.0.0: the first ConvBNReLU6
    return f"stage{stage}_pw0" if expansion else f"stage{stage}_pw1"


def _warehouse_ratios(name: str, key: str, settings: KWSettings) -> tuple[float, float, float]:
    """(cell_num_ratio, cell_in_ratio, cell_out_ratio) of warehouse ``key``: the settings' ratio and
    cell planes, except in MobileNetV2 1/2x (the stem and depthwise warehouses at 1x, the
    classifier's cells 1/40 of its inputs by all its outputs)."""
    plane = settings.cell_plane_ratio
    if name == "mobilenet_v2" and settings.ratio == "1/2":
        if key == "classifier":
            return settings.cell_num_ratio, MOBILENET_V2_HALF_CLASSIFIER_IN_RATIO, 1.0
        if not key.endswith(("_pw0", "_pw1")):
            return 1.0, 1.0, 1.0
    return settings.cell_num_ratio, plane, plane


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def share_warehouses(model: nn.Module, name: str, settings: KWSettings) -> nn.Module:
    """Replace the :class:`KWSlot` s of backbone ``name`` by KWConv2d layers sharing warehouses.

    Registers ``model.warehouses`` (a ModuleList, in the order their first layer was built, as the
    authors' ``warehouse_manager.weights``) and ``model.warehouse_names``. Each layer's own cells
    follow those of the layers before it in module order, as the authors assign them.
    """
    if name == "mobilenet_v2" and settings.ratio == "1/2":
        linear = model.get_submodule("classifier.1")
        _replace(
            model, "classifier.1", KWSlot(linear.in_features, linear.out_features, 1, 1, 0, 1, linear=True)
        )
    slots = [(n, m) for n, m in model.named_modules() if isinstance(m, KWSlot)]
    keys: dict[str, str | None] = {}
    for slot_name, slot in slots:
        if name == "mobilenet_v2":
            keys[slot_name] = _mobilenet_v2_warehouse(slot_name, slot, settings.ratio)
        else:
            keys[slot_name] = _resnet_warehouse(model, slot_name, slot)
    shapes: dict[str, list[tuple[int, int, int, int]]] = {}
    for slot_name, slot in slots:
        key = keys[slot_name]
        if key is not None:
            shapes.setdefault(key, []).append(slot.kernel_shape)
    linear_keys = {keys[slot_name] for slot_name, slot in slots if slot.linear}
    warehouses = {
        key: Warehouse.for_kernels(
            kernels, *_warehouse_ratios(name, key, settings), spatial_dims=1 if key in linear_keys else 2
        )
        for key, kernels in shapes.items()
    }
    next_cell = dict.fromkeys(warehouses, 0)
    warm_epochs = MOBILENET_V2_WARM_EPOCHS if name == "mobilenet_v2" else None
    for slot_name, slot in slots:
        key = keys[slot_name]
        if key is None:
            _replace(model, slot_name, slot.static())
            continue
        warehouse = warehouses[key]
        options = {
            "warehouse": warehouse,
            "start_cell": next_cell[key],
            "reduction": settings.reduction,
            "nonlocal_basis_ratio": settings.nonlocal_basis_ratio,
        }
        if slot.linear:  # the authors' KWLinear classifier, with its bias
            module: nn.Module = KWLinear(slot.in_channels, slot.out_channels, **options)
            layer = module.conv
        else:
            layer = KWConv2d(
                slot.in_channels,
                slot.out_channels,
                slot.kernel_size,
                slot.stride,
                slot.padding,
                groups=slot.groups,
                **options,
            )
            module = layer
        if warm_epochs is not None:
            layer.warm_epochs = warm_epochs
        warehouse.layer_ranges.append((layer.start_cell, layer.end_cell))
        next_cell[key] = layer.end_cell
        _replace(model, slot_name, module)
    for key, warehouse in warehouses.items():
        if next_cell[key] != warehouse.num_cells:
            raise RuntimeError(
                f"warehouse {key}: {next_cell[key]} of its {warehouse.num_cells} cells assigned"
            )
        warehouse.reset_parameters()
    model.warehouses = nn.ModuleList(warehouses.values())
    model.warehouse_names = tuple(warehouses)
    return model


class KernelWarehouseAssembly:
    """Builds KernelWarehouse backbones for :func:`~fmdconv.models.create_model` (the ``assembly``
    of its record): placeholders first, then :func:`share_warehouses` once the backbone is known."""

    options: tuple[str, ...] = ("kw_ratio", *KW_SETTING_OPTIONS)

    @staticmethod
    def settings(model: str, options: dict[str, object]) -> KWSettings:
        """The settings of backbone ``model``, taken out of ``options`` (``kw_ratio`` and
        :data:`KW_SETTING_OPTIONS`)."""
        given = {key: options.pop(key) for key in KW_SETTING_OPTIONS if key in options}
        return kw_settings(model, options.pop("kw_ratio", 1), **given)  # type: ignore[arg-type]

    placeholder = KWSlot

    @staticmethod
    def assemble(model: nn.Module, name: str, settings: KWSettings) -> None:
        share_warehouses(model, name, settings)


ASSEMBLY = KernelWarehouseAssembly()
