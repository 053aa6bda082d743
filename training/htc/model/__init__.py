"""The HTC model: ResNet-FPN backbone, RPN, and the three-stage hybrid task cascade."""

from .detector import HTC, FeatureNet, Features, build_model
from .roi_head import BoxCascade, HTCRoIHead, MaskCascade

__all__ = ["HTC", "FeatureNet", "Features", "build_model", "BoxCascade", "MaskCascade", "HTCRoIHead"]
