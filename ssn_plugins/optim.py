"""Optimizer parameter groups and gradient clipping with the published SN/SSN recipe."""
from typing import Dict, Iterator, List, Optional

import torch
from torch import nn

from .layers.channel_equilibrium import ChannelEquilibrium
from .layers.switch_norm import SwitchNorm

__all__ = ["param_groups", "ratio_parameters", "clip_ratio_grad_norm", "NORM_MODULES"]

#: Modules whose own parameters count as normalization parameters (γ, β, CE's λ logit).
NORM_MODULES = (SwitchNorm, ChannelEquilibrium, nn.modules.batchnorm._NormBase, nn.GroupNorm,
                nn.LayerNorm, nn.LocalResponseNorm)


def ratio_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The ratio logits (``mean_weight``, ``var_weight``) of every SN/SSN layer."""
    for m in model.modules():
        if isinstance(m, SwitchNorm):
            yield m.mean_weight
            yield m.var_weight


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    ratio_lr_factor: float = 0.1,
    ratio_weight_decay: float = 0.0,
    norm_weight_decay: Optional[float] = None,
) -> List[Dict]:
    """Optimizer parameter groups following the published SN/SSN recipe.

    Three groups (empty ones are left out), each with a ``"name"`` key:

    - ``"ratios"``: SN/SSN ``mean_weight`` / ``var_weight`` at
      ``lr * ratio_lr_factor`` with ``ratio_weight_decay`` (recipe: lr/10, no decay);
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
        "ratios": {"lr": lr * ratio_lr_factor, "weight_decay": ratio_weight_decay},
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
