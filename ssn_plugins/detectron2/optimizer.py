"""detectron2 optimizer with the published SN/SSN recipe.

detectron2's ``get_default_optimizer_params`` applies ``WEIGHT_DECAY_NORM``
only to the torch norm classes it lists; :func:`optimizer_params` adds the
SN/SSN/CE layers and gives the ratio logits ``base_lr * ratio_lr_factor``
and ``ratio_weight_decay`` in groups of their own (marked ``RATIO_GROUP``).
:func:`build_ssn_optimizer` (the Yacs trainer's) and the LazyConfig
optimizers of :mod:`.lazy` both build on it, and clip the ratio logits'
gradient norm before every step.
"""
from typing import List, Optional

import torch
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping, reduce_param_groups

from ..optim import (NORM_MODULES, RATIO_GROUP, RATIO_LR_FACTOR, RATIO_PARAMETERS, RATIO_WEIGHT_DECAY,
                     check_ratio_clip, install_ratio_clipping, ratio_parameters)

__all__ = ["optimizer_params", "build_ssn_optimizer"]


def _norm_parameter_ids(model) -> set:
    return {id(p) for m in model.modules() if isinstance(m, NORM_MODULES) for p in m.parameters(recurse=False)}


def optimizer_params(model: torch.nn.Module, base_lr: float, weight_decay: Optional[float] = None,
                     weight_decay_norm: Optional[float] = None, bias_lr_factor: float = 1.0,
                     weight_decay_bias: Optional[float] = None, ratio_lr_factor: float = RATIO_LR_FACTOR,
                     ratio_weight_decay: float = RATIO_WEIGHT_DECAY) -> List[dict]:
    """``get_default_optimizer_params`` (same arguments) plus the SN/SSN parameter rules.

    The ratio logits get ``base_lr * ratio_lr_factor`` and ``ratio_weight_decay``;
    SN/SSN γ/β and CE's parameters count as norm parameters
    (``weight_decay_norm``). ``base_lr`` is required: the ratio groups need
    their own learning rate (in a LazyConfig, ``base_lr="${..lr}"``).
    """
    if base_lr is None:
        raise ValueError("optimizer_params: base_lr is required (the ratio logits train at base_lr * "
                         "ratio_lr_factor); in a LazyConfig write base_lr=\"${..lr}\"")
    ratio_settings = {"lr": base_lr * ratio_lr_factor, "weight_decay": ratio_weight_decay, RATIO_GROUP: True}
    groups = get_default_optimizer_params(
        model, base_lr=base_lr, weight_decay=weight_decay, weight_decay_norm=weight_decay_norm,
        bias_lr_factor=bias_lr_factor, weight_decay_bias=weight_decay_bias,
        overrides={name: ratio_settings for name in RATIO_PARAMETERS})
    if weight_decay_norm is None:
        return groups
    ratios = {id(p) for p in ratio_parameters(model)}
    norms = _norm_parameter_ids(model) - ratios
    split = []
    for group in groups:
        ours = [p for p in group["params"] if id(p) in norms]
        rest = [p for p in group["params"] if id(p) not in norms]
        if rest:
            split.append({**group, "params": rest})
        if ours:
            split.append({**group, "params": ours, "weight_decay": weight_decay_norm})
    return reduce_param_groups(split)


def build_ssn_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD as detectron2's ``build_optimizer`` makes it, plus the SN/SSN parameter rules of ``cfg.MODEL.SSN``."""
    ssn = cfg.MODEL.SSN
    params = optimizer_params(
        model, base_lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM, bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS, ratio_lr_factor=ssn.RATIO_LR_FACTOR,
        ratio_weight_decay=ssn.RATIO_WEIGHT_DECAY)
    sgd = maybe_add_gradient_clipping(cfg, torch.optim.SGD)
    optimizer = sgd(params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV,
                    weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    install_ratio_clipping(optimizer, model, check_ratio_clip(ssn.RATIO_CLIP, "MODEL.SSN.RATIO_CLIP"))
    return optimizer
