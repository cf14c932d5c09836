"""Warnings for SN/SSN training that silently misses part of the published recipe.

Two mistakes leave no other trace, whatever the training loop (detectron2's
``DefaultTrainer``, a LazyConfig loop, a timm script, one's own):

- **SSN without a radius schedule.** An SSN layer starts at radius 0, where
  SparsestMax is sparsemax: nothing but a schedule ever raises the radius, so
  the layer never selects a normalizer. Each SSN layer counts its training
  forwards (with gradients, ratio logits open and trainable) until
  :func:`~ssn_plugins.set_radius` first touches it; at
  :data:`UNSCHEDULED_STEPS` it warns once, naming the schedules.
- **Ratio logits in the optimizer's ordinary parameter group.** The recipe
  trains ``mean_weight`` / ``var_weight`` at lr/10 without weight decay, in
  groups of their own. The first step of an optimizer that holds the ratio
  logits of a training SN/SSN layer checks, once, that every group holding
  them carries the recipe's mark (:data:`RATIO_GROUP`, set by every recipe
  builder of the package) or else holds nothing but ratio logits and has no
  weight decay; it warns otherwise. The check is a global optimizer step pre-hook, installed
  by the first training forward of an SN/SSN layer; after an optimizer's
  first step it costs one set lookup per step.

Neither check runs under ``torch.compile`` (a compiled forward does not
count). Silence a deliberate setting with :mod:`warnings` filters on the messages' opening
words ("SSN layers trained", "SN/SSN ratio logits").
"""
import warnings
import weakref
from typing import Iterable

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

__all__ = ["UNSCHEDULED_STEPS", "RATIO_GROUP", "warn_unscheduled", "watch_ratio_parameters"]

#: training forwards of an SSN layer with no radius schedule before the warning
UNSCHEDULED_STEPS = 50

#: the key a parameter group built by the recipe carries (``True``): its parameters are ratio logits on purpose
RATIO_GROUP = "ssn_ratios"

_DOORS = ("ssn_plugins.RadiusScheduler (a plain PyTorch or timm loop: scheduler.step(iteration) before each step), "
          "ssn_plugins.detectron2.Trainer or ssn_plugins.detectron2.ssn_hooks (detectron2), the optimizer of "
          "ssn_plugins.detectron2.lazy (LazyConfig), or SparsestMaxRadiusHook (OpenMMLab, in "
          "configs/_base_/ssn_runtime.py)")

NO_SCHEDULE = (f"SSN layers trained {UNSCHEDULED_STEPS} steps without a radius schedule: SparsestMax stays at the "
               f"radius the layers started with (0: sparsemax), so they never select a normalizer. Drive the radius "
               f"with {_DOORS}; for a deliberately constant radius call ssn_plugins.set_radius(model, r) once.")

UNGROUPED_RATIOS = ("SN/SSN ratio logits (mean_weight, var_weight) are trained in a parameter group {problem}: the "
                    "published recipe gives them lr/10 and no weight decay in groups of their own. Build the "
                    "optimizer's groups with ssn_plugins.param_groups(model, lr, weight_decay) (plain PyTorch, timm), "
                    "ssn_plugins.detectron2.Trainer / ssn_plugins.detectron2.lazy (detectron2) or "
                    "SSNOptimWrapperConstructor (OpenMMLab).")


def warn_unscheduled() -> None:
    """The no-schedule warning (shown once per process by Python's default warning filter)."""
    warnings.warn(NO_SCHEDULE, UserWarning, stacklevel=3)


# ratio logits of SN/SSN layers that have trained, by id (weakly: a deleted model leaves nothing behind)
_ratio_parameters: "weakref.WeakValueDictionary[int, torch.Tensor]" = weakref.WeakValueDictionary()
_checked_optimizers: "weakref.WeakSet[torch.optim.Optimizer]" = weakref.WeakSet()
_hook = None


def watch_ratio_parameters(parameters: Iterable[torch.Tensor]) -> None:
    """Check the parameter groups of every optimizer that will step ``parameters`` (a layer's ratio logits).

    Called by an SN/SSN layer's first training forward with gradients.
    """
    global _hook
    for p in parameters:
        _ratio_parameters[id(p)] = p
    if _hook is None:
        _hook = register_optimizer_step_pre_hook(_check_parameter_groups)


def _check_parameter_groups(optimizer, args, kwargs) -> None:
    if optimizer in _checked_optimizers:
        return
    _checked_optimizers.add(optimizer)
    for group in optimizer.param_groups:
        params = group["params"]
        ratios = [p for p in params if _ratio_parameters.get(id(p)) is p]
        if not ratios or group.get(RATIO_GROUP, False):
            continue
        if len(ratios) < len(params):
            problem = "with other parameters"
        elif group.get("weight_decay", 0):
            problem = f"with weight decay {group['weight_decay']:g}"
        else:
            continue
        warnings.warn(UNGROUPED_RATIOS.format(problem=problem), UserWarning, stacklevel=3)
        return
