"""detectron2 adapter.

``import ssn_plugins.detectron2`` makes ``NORM: "SN"``, ``"SSN"``, ``"SyncSN"``
and ``"SyncSSN"`` valid wherever detectron2 resolves a norm name; call
``add_ssn_config(cfg)`` before reading a config and ``configure_norms(cfg)``
after it (``tools/train_net.py`` does both).
"""
from .channel_equilibrium import add_channel_equilibrium, build_model
from .config import add_ssn_config, merge_config_file
from .datasets import register_real_mini
from .hooks import (BatchAverageStatistics, RadiusSchedule, RatioScalars, freeze_switch_norms,
                    recompute_detection_statistics, ssn_hooks)
from .norms import NORM_LAYERS, configure_norms, register_norms
from .optimizer import build_ssn_optimizer

register_norms()

__all__ = ["add_ssn_config", "merge_config_file", "configure_norms", "register_norms", "NORM_LAYERS",
           "build_ssn_optimizer", "ssn_hooks", "freeze_switch_norms", "RadiusSchedule", "BatchAverageStatistics",
           "RatioScalars", "register_real_mini", "recompute_detection_statistics", "build_model",
           "add_channel_equilibrium"]
