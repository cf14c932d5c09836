"""detectron2 optimizer with the published SN/SSN recipe.

detectron2's ``get_default_optimizer_params`` applies ``WEIGHT_DECAY_NORM``
only to the torch norm classes it lists; this adds the SN/SSN/CE layers,
gives the ratio logits ``BASE_LR * RATIO_LR_FACTOR`` and
``RATIO_WEIGHT_DECAY``, and clips their gradient norm before every step.
"""
import torch
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping, reduce_param_groups

from ..optim import NORM_MODULES, RATIO_PARAMETERS, check_ratio_clip, install_ratio_clipping, ratio_parameters


def _norm_parameter_ids(model) -> set:
    return {id(p) for m in model.modules() if isinstance(m, NORM_MODULES) for p in m.parameters(recurse=False)}


def build_ssn_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD as detectron2's ``build_optimizer`` makes it, plus the SN/SSN parameter rules."""
    ssn = cfg.MODEL.SSN
    ratio_settings = {"lr": cfg.SOLVER.BASE_LR * ssn.RATIO_LR_FACTOR, "weight_decay": ssn.RATIO_WEIGHT_DECAY}
    groups = get_default_optimizer_params(
        model, base_lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM, bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        overrides={name: ratio_settings for name in RATIO_PARAMETERS})
    ratios = {id(p) for p in ratio_parameters(model)}
    norms = _norm_parameter_ids(model) - ratios
    split = []
    for group in groups:
        ours = [p for p in group["params"] if id(p) in norms]
        rest = [p for p in group["params"] if id(p) not in norms]
        if rest:
            split.append({**group, "params": rest})
        if ours:
            split.append({**group, "params": ours, "weight_decay": cfg.SOLVER.WEIGHT_DECAY_NORM})
    params = reduce_param_groups(split)

    sgd = maybe_add_gradient_clipping(cfg, torch.optim.SGD)
    optimizer = sgd(params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV,
                    weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    install_ratio_clipping(optimizer, model, check_ratio_clip(ssn.RATIO_CLIP, "MODEL.SSN.RATIO_CLIP"))
    return optimizer
