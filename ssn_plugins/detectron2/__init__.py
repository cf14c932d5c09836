"""detectron2 adapter.

``import ssn_plugins.detectron2`` makes ``NORM: "SN"``, ``"SSN"``, ``"SyncSN"``
and ``"SyncSSN"`` valid wherever detectron2 resolves a norm name, and makes
detectron2's own ``build_model`` apply ``cfg.MODEL.SSN``'s layer options,
``MODEL.RESNETS.CE`` and ``FREEZE_AT`` (for SN/SSN layers) of the config being
built, and makes ``MODEL.WEIGHTS: "ssn://NAME"`` load a published checkpoint
(:mod:`.model_zoo`). Call ``add_ssn_config(cfg)`` before reading a config.
"""
from .build import build_model, freeze_switch_norms, register_build_model
from .channel_equilibrium import add_channel_equilibrium
from .config import add_ssn_config, merge_config_file
from .datasets import register_real_mini
from .model_zoo import SSNModelZooHandler, register_model_zoo_handler
from .hooks import (BatchAverageStatistics, RadiusSchedule, RatioScalars, recompute_detection_statistics, ssn_hooks,
                    validate_ssn_config)
from .norms import NORM_LAYERS, layer_options, norm_options, register_norms
from .optimizer import build_ssn_optimizer

register_norms()
register_model_zoo_handler()

__all__ = ["add_ssn_config", "merge_config_file", "norm_options", "layer_options", "register_norms",
           "register_build_model", "NORM_LAYERS", "build_ssn_optimizer", "ssn_hooks", "freeze_switch_norms",
           "RadiusSchedule", "BatchAverageStatistics", "RatioScalars", "register_real_mini",
           "recompute_detection_statistics", "build_model", "add_channel_equilibrium", "validate_ssn_config",
           "SSNModelZooHandler", "register_model_zoo_handler"]
