"""Classification models (torch only)."""
from .resnet import DEPTHS, NORMS, ResNet, norm_factory, resnet

__all__ = ["ResNet", "resnet", "norm_factory", "DEPTHS", "NORMS"]
