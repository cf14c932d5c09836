"""Registration of the SN/SSN/CE layers and CE backbones in mmengine's root ``MODELS`` registry.

``mmcv.cnn.build_norm_layer`` looks a ``norm_cfg`` type up in the root
registry, which mmseg, mmdet and mmaction2 all inherit, so one registration
serves every scope. It names the created attribute after the class's
``_abbr_``; ``"bn"`` keeps the ``bn1`` / ``conv1.bn`` names that OpenMMLab's
checkpoints and mmaction2's 2-D→3-D inflation read.
"""
from mmengine.registry import MODELS

from ..layers import (ChannelEquilibrium, SparseSwitchNorm2d, SparseSwitchNorm3d, SwitchNorm2d, SwitchNorm3d,
                      SyncSparseSwitchNorm2d, SyncSparseSwitchNorm3d, SyncSwitchNorm2d, SyncSwitchNorm3d)

#: ``norm_cfg`` type -> layer class
NORM_LAYERS = {
    "SN": SwitchNorm2d,
    "SSN": SparseSwitchNorm2d,
    "SyncSN": SyncSwitchNorm2d,
    "SyncSSN": SyncSparseSwitchNorm2d,
    "SN3d": SwitchNorm3d,
    "SSN3d": SparseSwitchNorm3d,
    "SyncSN3d": SyncSwitchNorm3d,
    "SyncSSN3d": SyncSparseSwitchNorm3d,
}


def register_all() -> None:
    """Register every layer of :data:`NORM_LAYERS`, ``CE``, the CE backbones and the ``ssn://`` scheme (idempotent)."""
    from .channel_equilibrium import build_resnet3d_ce, build_resnet_ce
    from .checkpoint import register_model_zoo_scheme

    for name, cls in NORM_LAYERS.items():
        cls._abbr_ = "bn"
        MODELS.register_module(name, module=cls, force=True)
    MODELS.register_module("CE", module=ChannelEquilibrium, force=True)
    MODELS.register_module("ResNetCE", module=build_resnet_ce, force=True)
    MODELS.register_module("ResNet3dCE", module=build_resnet3d_ce, force=True)
    register_model_zoo_scheme()
