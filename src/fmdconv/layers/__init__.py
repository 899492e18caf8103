"""Dynamic convolution layers: one core (:class:`DynamicConv2d`) and the four methods as presets,
DCD (:class:`DCDConv2d`), FDConv (:class:`FDConv2d`) and KernelWarehouse (:class:`KWConv2d`)
beside it, and the feature attentions they are compared with (SE, CBAM, ECA); one record per method
(:class:`MethodInfo`, :func:`method_info`) says what the rest of the library needs to know of it."""

from fmdconv.layers.attention import ATTENTION_INITS, SharedRouting
from fmdconv.layers.choice_cache import MeasurementReport
from fmdconv.layers.dcd import DCD_ATTENTION_NAMES, DCDAttention, DCDConv2d
from fmdconv.layers.dynamic_conv import (
    ATTENTION_NAMES,
    DynamicConv2d,
    DynamicConvSpec,
    disabled_attentions,
    restore_disabled_attentions,
    set_attentions,
    set_formulation,
)
from fmdconv.layers.dynamic_linear import DynamicLinear
from fmdconv.layers.factory import conv_type, create_conv2d
from fmdconv.layers.fdconv import FD_FORMULATIONS, FD_PARTS, FDConv2d
from fmdconv.layers.feature_attention import (
    CBAM,
    ECA,
    FEATURE_ATTENTIONS,
    SqueezeExcitation,
    create_feature_attention,
)
from fmdconv.layers.formulations import (
    FORMULATIONS,
    clear_benchmark_cache,
    measurement_report,
    set_benchmark,
)
from fmdconv.layers.kernelwarehouse import (
    KW_ATTENTION_NAMES,
    KWAttention,
    KWConv2d,
    KWLinear,
    Warehouse,
    kw_layers,
)
from fmdconv.layers.methods import CondConv2d, DyConv2d, FMDConv2d, ODConv2d
from fmdconv.layers.registry import (
    CONV_KINDS,
    KERNEL_MIXTURES,
    ROLES,
    ConvSite,
    Layout,
    MethodInfo,
    conv_info,
    conv_names,
    method_info,
    method_names,
    register_method,
    unregister_method,
)
from fmdconv.layers.temperature import (
    KERNEL_MODES,
    ConstantTemperature,
    LinearTemperature,
    StepTemperature,
    TemperatureScheduler,
    dynamic_layers,
    kw_schedule,
    paper_schedules,
    set_temperature,
)

__all__ = [
    "ATTENTION_INITS",
    "ATTENTION_NAMES",
    "CBAM",
    "CONV_KINDS",
    "DCD_ATTENTION_NAMES",
    "ECA",
    "FD_FORMULATIONS",
    "FD_PARTS",
    "FEATURE_ATTENTIONS",
    "FORMULATIONS",
    "KERNEL_MIXTURES",
    "KERNEL_MODES",
    "KW_ATTENTION_NAMES",
    "ROLES",
    "CondConv2d",
    "ConstantTemperature",
    "ConvSite",
    "DCDAttention",
    "DCDConv2d",
    "DyConv2d",
    "DynamicConv2d",
    "DynamicConvSpec",
    "DynamicLinear",
    "FDConv2d",
    "FMDConv2d",
    "KWAttention",
    "KWConv2d",
    "KWLinear",
    "Layout",
    "LinearTemperature",
    "MeasurementReport",
    "MethodInfo",
    "ODConv2d",
    "SharedRouting",
    "SqueezeExcitation",
    "StepTemperature",
    "TemperatureScheduler",
    "Warehouse",
    "clear_benchmark_cache",
    "conv_info",
    "conv_names",
    "conv_type",
    "create_conv2d",
    "create_feature_attention",
    "disabled_attentions",
    "dynamic_layers",
    "kw_layers",
    "kw_schedule",
    "measurement_report",
    "method_info",
    "method_names",
    "paper_schedules",
    "register_method",
    "restore_disabled_attentions",
    "set_attentions",
    "set_benchmark",
    "set_formulation",
    "set_temperature",
    "unregister_method",
]
