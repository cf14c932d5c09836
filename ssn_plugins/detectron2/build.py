"""detectron2's ``build_model``, completed for SN/SSN/CE: what a config says takes effect however the model is built.

:func:`register_build_model` rebinds :func:`build_model` in place of detectron2's own everywhere (as
:mod:`.norms` does for ``get_norm``), so ``DefaultTrainer``, ``DefaultPredictor``, ``model_zoo.get`` and a
direct ``detectron2.modeling.build_model(cfg)`` all apply ``cfg.MODEL.SSN``'s layer options,
``MODEL.RESNETS.CE`` and ``FREEZE_AT`` for SN/SSN layers.
"""
from typing import Callable

import torch

from ..layers import SwitchNorm
from .channel_equilibrium import add_channel_equilibrium
from .norms import norm_options
from .patching import rebind


def freeze_switch_norms(model: torch.nn.Module) -> int:
    """Freeze (see ``SwitchNorm.freeze``) every SN/SSN layer whose parameters detectron2's
    ``FREEZE_AT`` already froze; returns how many. ``FrozenBatchNorm2d`` conversion only knows BatchNorm.
    """
    frozen = 0
    for m in model.modules():
        if isinstance(m, SwitchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.freeze()
            frozen += 1
    return frozen


def _complete(model: torch.nn.Module, cfg) -> torch.nn.Module:
    ce = cfg.MODEL.RESNETS.get("CE")
    if ce is not None and ce.ENABLED:
        backbone = model.backbone
        add_channel_equilibrium(getattr(backbone, "bottom_up", backbone), ce.STEM_GROUP_SIZE, ce.GROUP_SIZE)
    freeze_switch_norms(model)
    return model


def _wrap(original: Callable) -> Callable:
    def build_model(cfg):
        """detectron2's ``build_model`` with ``cfg.MODEL.SSN``'s layer options in force during the build, then
        Channel Equilibrium (``MODEL.RESNETS.CE.ENABLED``) and frozen SN/SSN layers in stages frozen by
        ``FREEZE_AT``."""
        with norm_options(cfg):
            model = original(cfg)
        return _complete(model, cfg)

    build_model.__wrapped__ = original
    build_model.ssn_plugins = True
    return build_model


def register_build_model() -> Callable:
    """Put :func:`build_model` in place of detectron2's everywhere (idempotent). Returns it."""
    from detectron2.modeling.meta_arch import build as d2_build

    current = d2_build.build_model
    if getattr(current, "ssn_plugins", False):
        return current
    wrapper = _wrap(current)
    rebind("build_model", current, wrapper)
    return wrapper


build_model = register_build_model()
