"""Complexity (parameters, MACs) and measured speed of models with dynamic convolutions."""

from fmdconv.profiling.complexity import MAC_PARTS, LayerProfile, ModelProfile, profile
from fmdconv.profiling.speed import MODES, SpeedResult, measure_speed

__all__ = ["MAC_PARTS", "MODES", "LayerProfile", "ModelProfile", "SpeedResult", "measure_speed", "profile"]
