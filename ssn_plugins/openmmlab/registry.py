"""Registration of the SN/SSN/CE layers and CE backbones in mmengine's root ``MODELS`` registry.

``mmcv.cnn.build_norm_layer`` looks a ``norm_cfg`` type up in the root
registry, which mmseg, mmdet and mmaction2 all inherit, so one registration
serves every scope. It names the created attribute after the class's
``_abbr_``, which the layers declare as ``"bn"`` (keeping the ``bn1`` /
``conv1.bn`` names that OpenMMLab's checkpoints and mmaction2's 2-D→3-D
inflation read).
"""
from mmengine.registry import MODELS

from ..layers import ChannelEquilibrium, norm_classes

#: ``norm_cfg`` type -> layer class: the core's table, its 3-d classes with a ``3d`` suffix
NORM_LAYERS = {**norm_classes(2), **{f"{name}3d": cls for name, cls in norm_classes(3).items()}}


def register_all() -> None:
    """Register every layer of :data:`NORM_LAYERS`, ``CE``, the CE backbones and the ``ssn://`` scheme (idempotent)."""
    from .channel_equilibrium import build_resnet3d_ce, build_resnet_ce
    from .checkpoint import register_model_zoo_scheme

    for name, cls in NORM_LAYERS.items():
        MODELS.register_module(name, module=cls, force=True)
    MODELS.register_module("CE", module=ChannelEquilibrium, force=True)
    MODELS.register_module("ResNetCE", module=build_resnet_ce, force=True)
    MODELS.register_module("ResNet3dCE", module=build_resnet3d_ce, force=True)
    register_model_zoo_scheme()
