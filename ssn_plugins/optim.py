"""The published SN/SSN optimizer recipe: parameter groups, ratio-gradient clipping, and their defaults.

The one home of these rules: detectron2's ``build_ssn_optimizer``, mmengine's
``SSNOptimWrapperConstructor`` and the pretraining tool all read the defaults
and call :func:`install_ratio_clipping` from here.
"""
import math
from typing import Dict, Iterator, List, Optional

import torch
from torch import nn

from .layers.channel_equilibrium import ChannelEquilibrium
from .layers.switch_norm import RATIO_PARAMETERS, SwitchNorm
from .recipe_checks import RATIO_GROUP

__all__ = ["param_groups", "ratio_parameters", "clip_ratio_grad_norm", "install_ratio_clipping",
           "check_ratio_clip", "NORM_MODULES", "RATIO_PARAMETERS", "RATIO_LR_FACTOR", "RATIO_WEIGHT_DECAY",
           "RATIO_CLIP", "RATIO_GROUP"]

#: the papers' recipe for the ratio logits: lr x 0.1, no weight decay, gradient norm clipped at 1
RATIO_LR_FACTOR = 0.1
RATIO_WEIGHT_DECAY = 0.0
RATIO_CLIP: Optional[float] = 1.0

#: Modules whose own parameters count as normalization parameters (γ, β, CE's λ logit).
NORM_MODULES = (SwitchNorm, ChannelEquilibrium, nn.modules.batchnorm._NormBase, nn.GroupNorm,
                nn.LayerNorm, nn.LocalResponseNorm)


def ratio_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The ratio logits (``mean_weight``, ``var_weight``) of every SN/SSN layer."""
    for m in model.modules():
        if isinstance(m, SwitchNorm):
            for name in RATIO_PARAMETERS:
                yield getattr(m, name)


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    ratio_lr_factor: float = RATIO_LR_FACTOR,
    ratio_weight_decay: float = RATIO_WEIGHT_DECAY,
    norm_weight_decay: Optional[float] = None,
) -> List[Dict]:
    """Optimizer parameter groups following the published SN/SSN recipe.

    Three groups (empty ones are left out), each with a ``"name"`` key:

    - ``"ratios"``: SN/SSN ``mean_weight`` / ``var_weight`` at
      ``lr * ratio_lr_factor`` with ``ratio_weight_decay`` (recipe: lr/10, no decay),
      marked with ``RATIO_GROUP: True`` (:mod:`ssn_plugins.recipe_checks`);
    - ``"norm"``: the parameters of normalization modules (SN/SSN and
      ``torch.nn`` norms' γ/β, CE's λ logit) with ``norm_weight_decay``
      (``weight_decay`` when ``None``);
    - ``"other"``: everything else, with ``weight_decay``.

    Parameters that do not require gradients are skipped; a shared parameter
    is listed once.
    """
    ratios = {id(p) for p in ratio_parameters(model)}
    groups = {"ratios": [], "norm": [], "other": []}
    seen = set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if id(p) in ratios:
                groups["ratios"].append(p)
            elif isinstance(module, NORM_MODULES):
                groups["norm"].append(p)
            else:
                groups["other"].append(p)
    settings = {
        "ratios": {"lr": lr * ratio_lr_factor, "weight_decay": ratio_weight_decay, RATIO_GROUP: True},
        "norm": {"lr": lr, "weight_decay": weight_decay if norm_weight_decay is None else norm_weight_decay},
        "other": {"lr": lr, "weight_decay": weight_decay},
    }
    return [{"name": name, "params": params, **settings[name]} for name, params in groups.items() if params]


def clip_ratio_grad_norm(model: nn.Module, max_norm: float = 1.0, norm_type: float = 2.0) -> torch.Tensor:
    """Clip the gradient norm of all ratio logits together (the published recipe: ``max_norm=1``).

    Returns the total norm before clipping (``torch.nn.utils.clip_grad_norm_``).
    """
    params = [p for p in ratio_parameters(model) if p.grad is not None]
    if not params:
        return torch.tensor(0.0)
    return torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)


def check_ratio_clip(max_norm: Optional[float], name: str = "ratio clip") -> Optional[float]:
    """``max_norm`` as a float > 0, or ``None`` (clipping off: the one "off" value everywhere).

    ``0`` is refused rather than read as "off": ``clip_grad_norm_`` with 0 would
    zero every ratio gradient, and the two readings must not depend on the tool.
    """
    if max_norm is None:
        return None
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not (
            math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"{name} must be a finite number > 0, or None to turn ratio-gradient clipping off; "
                         f"got {max_norm!r}")
    return float(max_norm)


def unwrapped(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel, mmengine's wrappers and test-time-augmentation models (all keep
    it in ``.module``): the one unwrapping both adapters use."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def install_ratio_clipping(optimizer: torch.optim.Optimizer, model: nn.Module,
                           max_norm: Optional[float] = RATIO_CLIP):
    """Clip the ratio logits' gradient norm (:func:`clip_ratio_grad_norm`) before every ``optimizer.step()``.

    A step pre-hook, so it runs after anything that prepares the gradients
    before the step (an AMP grad scaler unscales first) in every training loop.
    ``max_norm=None`` installs nothing. ``model`` may be wrapped (DDP). Returns
    the hook handle, or ``None`` when nothing was installed (clipping off, or
    a model without SN/SSN layers).
    """
    max_norm = check_ratio_clip(max_norm, "install_ratio_clipping max_norm")
    model = unwrapped(model)
    if max_norm is None or next(ratio_parameters(model), None) is None:
        return None

    def clip_ratio_gradients(optimizer, args, kwargs):
        clip_ratio_grad_norm(model, max_norm)

    return optimizer.register_step_pre_hook(clip_ratio_gradients)
