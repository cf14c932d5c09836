"""detectron2 adapter.

``import ssn_plugins.detectron2`` calls :func:`register`, which makes

- ``NORM: "SN"``, ``"SSN"``, ``"SyncSN"`` and ``"SyncSSN"`` valid wherever
  detectron2 resolves a norm name (:func:`.norms.register_norms`);
- every ``build_model(cfg)`` apply ``cfg.MODEL.SSN``'s layer options,
  ``MODEL.RESNETS.CE`` and ``FREEZE_AT`` (for SN/SSN layers) of the config being
  built, whatever reference to ``build_model`` the caller holds
  (:func:`.build.register_meta_architectures`);
- ``MODEL.WEIGHTS: "ssn://NAME"`` load a published checkpoint, and the shipped
  configs' ``_BASE_`` URLs read the installed detectron2's model zoo
  (:mod:`.model_zoo`).

:func:`unregister` undoes the first two. Call ``add_ssn_config(cfg)`` before
reading a config; :mod:`.lazy` holds the LazyConfig pieces.
"""
from .build import (build_model, check_input_convention, complete_model, freeze_switch_norms,
                    register_meta_architectures, unregister_meta_architectures)
from .channel_equilibrium import add_channel_equilibrium
from .config import add_ssn_config, merge_config_file
from .datasets import register_real_mini
from .hooks import (BatchAverageStatistics, RadiusSchedule, RatioScalars, recompute_detection_statistics, ssn_hooks,
                    validate_ssn_config)
from .model_zoo import MODEL_ZOO_CONFIGS, ModelZooConfigHandler, SSNModelZooHandler, register_path_handlers
from .norms import NORM_LAYERS, SwitchNormLayer, layer_options, norm_options, register_norms, unregister_norms
from .optimizer import build_ssn_optimizer, optimizer_params
from .trainer import Trainer


def register() -> None:
    """Register the norm names, the config-aware model building and the path handlers (idempotent)."""
    register_norms()
    register_meta_architectures()
    register_path_handlers()


def unregister() -> None:
    """Undo :func:`register`'s norm names and model building (detectron2 as it was; path handlers stay)."""
    unregister_norms()
    unregister_meta_architectures()


register()

__all__ = ["register", "unregister", "add_ssn_config", "merge_config_file", "norm_options", "layer_options",
           "register_norms", "unregister_norms", "register_meta_architectures", "unregister_meta_architectures",
           "NORM_LAYERS", "SwitchNormLayer", "build_ssn_optimizer", "ssn_hooks", "freeze_switch_norms",
           "complete_model", "check_input_convention", "RadiusSchedule", "BatchAverageStatistics", "RatioScalars",
           "register_real_mini", "recompute_detection_statistics", "build_model", "add_channel_equilibrium",
           "validate_ssn_config", "SSNModelZooHandler", "ModelZooConfigHandler", "MODEL_ZOO_CONFIGS",
           "register_path_handlers", "optimizer_params", "Trainer"]
