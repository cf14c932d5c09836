# The SN/SSN plugin for any OpenMMLab config: add this file to `_base_` beside the upstream config.
# It registers the layers, hooks and optimizer constructor; the hooks do nothing on a model without
# the layers they concern. Set `optim_wrapper = dict(constructor='SSNOptimWrapperConstructor')` in the config
# itself (mmengine forbids the same key in two base files).
custom_imports = dict(imports=['ssn_plugins.openmmlab'], allow_failed_imports=False)
custom_hooks = [
    dict(type='SparsestMaxRadiusHook'),       # radius t/T, continues on resume
    dict(type='BatchAverageStatisticsHook'),  # batch-average BN statistics before val/test (<= 200 batches)
    dict(type='SwitchNormEvalHook'),          # norm_eval=True also freezes SN/SSN/CE statistics
    dict(type='SwitchNormScalarsHook', interval=50),  # mean ratios to the visualizer, selection at the end
]
