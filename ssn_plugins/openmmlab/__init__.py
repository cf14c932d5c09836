"""OpenMMLab adapter (mmseg, mmdet, mmaction2 on mmengine).

``custom_imports=dict(imports=['ssn_plugins.openmmlab'])`` in a config (or
importing this package) registers, in mmengine's root registries that every
OpenMMLab scope inherits:

- norm layers ``SN``, ``SSN``, ``SyncSN``, ``SyncSSN`` (2-D), ``SN3d``,
  ``SSN3d``, ``SyncSN3d``, ``SyncSSN3d`` (5-D) and ``CE``;
- hooks ``SparsestMaxRadiusHook``, ``BatchAverageStatisticsHook``,
  ``SwitchNormEvalHook``, ``SwitchNormScalarsHook``;
- the optimizer-wrapper constructor ``SSNOptimWrapperConstructor``.
"""
from .checkpoint import trusted_checkpoints
from .hooks import BatchAverageStatisticsHook, SparsestMaxRadiusHook, SwitchNormEvalHook, SwitchNormScalarsHook
from .optimizer import SSNOptimWrapperConstructor
from .registry import NORM_LAYERS, register_all

register_all()

__all__ = ["NORM_LAYERS", "register_all", "trusted_checkpoints", "SSNOptimWrapperConstructor",
           "SparsestMaxRadiusHook", "BatchAverageStatisticsHook", "SwitchNormEvalHook", "SwitchNormScalarsHook"]
