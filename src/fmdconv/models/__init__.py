"""Backbones (ResNet, MobileNetV2) built with any convolution of the family."""

from fmdconv.models.conv_factory import REPLACED_ROLES, ROLES, ConvFactory
from fmdconv.models.convert import convert
from fmdconv.models.features import FeatureBackbone, FeatureInfo
from fmdconv.models.mobilenetv2 import MobileNetV2
from fmdconv.models.registry import create_model, list_models
from fmdconv.models.resnet import ResNet

__all__ = [
    "REPLACED_ROLES",
    "ROLES",
    "ConvFactory",
    "FeatureBackbone",
    "FeatureInfo",
    "MobileNetV2",
    "ResNet",
    "convert",
    "create_model",
    "list_models",
]
