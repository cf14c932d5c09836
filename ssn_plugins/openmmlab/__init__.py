"""OpenMMLab adapter (mmseg, mmdet, mmaction2 on mmengine).

``custom_imports=dict(imports=['ssn_plugins.openmmlab'])`` in a config (or
importing this package) registers, in mmengine's root registries that every
OpenMMLab scope inherits:

- norm layers ``SN``, ``SSN``, ``SyncSN``, ``SyncSSN`` (2-D), ``SN3d``,
  ``SSN3d``, ``SyncSN3d``, ``SyncSSN3d`` (5-D) and ``CE``;
- hooks ``SparsestMaxRadiusHook``, ``BatchAverageStatisticsHook``,
  ``SwitchNormEvalHook``, ``SwitchNormScalarsHook``;
- the optimizer-wrapper constructor ``SSNOptimWrapperConstructor``;

and makes mmengine's own checkpoints load with torch's ``weights_only=True``
(:func:`.checkpoint.allow_mmengine_checkpoints`), and a misspelt ``norm_cfg``
type name itself and the nearest registered ones (:func:`.registry.register_norm_errors`).
"""
from .checkpoint import allow_mmengine_checkpoints, trusted_checkpoints
from .hooks import BatchAverageStatisticsHook, SparsestMaxRadiusHook, SwitchNormEvalHook, SwitchNormScalarsHook
from .optimizer import SSNOptimWrapperConstructor
from .registry import NORM_LAYERS, norm_names, register_all, register_norm_errors, unregister_norm_errors

register_all()

__all__ = ["NORM_LAYERS", "register_all", "trusted_checkpoints", "allow_mmengine_checkpoints", "norm_names",
           "register_norm_errors", "unregister_norm_errors", "SSNOptimWrapperConstructor",
           "SparsestMaxRadiusHook", "BatchAverageStatisticsHook", "SwitchNormEvalHook", "SwitchNormScalarsHook"]
