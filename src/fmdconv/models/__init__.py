"""Backbones (ResNet, MobileNetV2) built with any convolution of the family."""

from fmdconv.layers import KERNEL_MIXTURES  # kept here too: the model layer lists it with METHODS
from fmdconv.models.conv_factory import REPLACED_ROLES, ROLES, ConvFactory
from fmdconv.models.convert import convert
from fmdconv.models.features import FeatureBackbone, FeatureInfo
from fmdconv.models.mobilenetv2 import MobileNetV2
from fmdconv.models.registry import METHODS, accepted_options, create_model, list_models, method_options
from fmdconv.models.resnet import ResNet

__all__ = [
    "KERNEL_MIXTURES",
    "METHODS",
    "REPLACED_ROLES",
    "ROLES",
    "ConvFactory",
    "FeatureBackbone",
    "FeatureInfo",
    "MobileNetV2",
    "ResNet",
    "accepted_options",
    "convert",
    "create_model",
    "list_models",
    "method_options",
]
