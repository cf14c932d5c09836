"""OpenMMLab adapter: ``custom_imports=dict(imports=['ssn_plugins.openmmlab'])`` registers the layers."""
from .registry import NORM_LAYERS, register_all

register_all()

__all__ = ["NORM_LAYERS", "register_all"]
