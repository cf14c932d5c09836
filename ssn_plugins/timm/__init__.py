"""timm adapter: SN/SSN as ``norm_layer`` in ``timm.create_model``, and ``convert_norm`` on timm models.

``import ssn_plugins.timm`` registers (:func:`register`; :func:`unregister`
undoes it)::

    import timm, ssn_plugins as S, ssn_plugins.timm
    model = timm.create_model("efficientnet_b0", norm_layer="ssn", num_classes=10)
    # or convert a (pretrained) timm model, keeping its fused activations:
    model = S.convert_norm(timm.create_model("efficientnet_b0"), to="SSN")

Train it with the recipe as any PyTorch model (``ssn_plugins.param_groups``,
``install_ratio_clipping``, ``RadiusScheduler``).
"""
from .norm_act import (NORM_ACT_TYPES, SparseSwitchNormAct, SparseSwitchNormAct2d, SwitchNormAct, SwitchNormAct2d,
                       SyncSparseSwitchNormAct, SyncSparseSwitchNormAct2d, SyncSwitchNormAct, SyncSwitchNormAct2d)
from .registry import TIMM_NAMES, register, unregister

register()

__all__ = ["register", "unregister", "TIMM_NAMES", "NORM_ACT_TYPES", "SwitchNormAct", "SwitchNormAct2d",
           "SparseSwitchNormAct", "SparseSwitchNormAct2d", "SyncSwitchNormAct", "SyncSwitchNormAct2d",
           "SyncSparseSwitchNormAct", "SyncSparseSwitchNormAct2d"]
