"""detectron2's model building, completed for SN/SSN/CE: what a config says takes effect however the model is built.

``detectron2.modeling.build_model(cfg)`` looks ``cfg.MODEL.META_ARCHITECTURE``
up in ``META_ARCH_REGISTRY`` at every call. :func:`register_meta_architectures`
makes that lookup return the meta-architecture wrapped so that, for the
config being built, ``cfg.MODEL.SSN``'s layer options are in force
(:func:`.norms.norm_options`), ``MODEL.RESNETS.CE`` adds Channel Equilibrium
and SN/SSN layers in stages frozen by ``FREEZE_AT`` are frozen
(:func:`complete_model`). Whatever reference to ``build_model`` a caller
holds, imported before or after this package (``DefaultTrainer``,
``DefaultPredictor``, ``model_zoo.get``, a script), the lookup goes through
the registry, so the order of imports does not matter.
"""
import functools
import warnings
from typing import Callable

import torch
from detectron2.config import CfgNode

from .. import model_zoo
from ..layers import SwitchNorm
from ..optim import unwrapped
from .channel_equilibrium import add_channel_equilibrium
from .norms import norm_options

__all__ = ["build_model", "complete_model", "freeze_switch_norms", "register_meta_architectures",
           "unregister_meta_architectures", "check_input_convention", "mark_recipe_hooks", "RECIPE_HOOKS_MARK"]

#: the attribute ``ssn_hooks`` sets on the model it schedules; a training model without it gets a warning
RECIPE_HOOKS_MARK = "_ssn_plugins_recipe_hooks"

TRAINER_OPTIONS = ("RADIUS_START_ITER", "RADIUS_END_ITER", "MAX_RADIUS", "REOPEN_SELECTION", "RATIO_LR_FACTOR",
                   "RATIO_WEIGHT_DECAY", "RATIO_CLIP", "INFERENCE_STATS", "BATCH_AVERAGE_ITERS", "SCALARS_PERIOD",
                   "SELECTION_CHART")


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


def check_input_convention(weights: str, input_format: str, pixel_mean, pixel_std) -> None:
    """Warn when ``ssn://`` weights were trained on inputs other than the model's (channel order, mean, std).

    The catalogue knows each published network's input convention; detectron2's
    defaults (BGR, Caffe mean, std 1) are not the SN/SSN releases' (RGB,
    torchvision's mean and std), and a backbone fed the wrong ones trains and
    evaluates, only worse. Other weights are not checked.
    """
    if not isinstance(weights, str) or not weights.startswith(model_zoo.SCHEME):
        return
    try:
        name, _ = model_zoo.parse_url(weights, "detectron2")
    except model_zoo.ModelZooError:
        return  # loading the weights says what is wrong with the name
    expected = model_zoo.get_entry(name).input_convention
    mean, std = [float(v) for v in pixel_mean], [float(v) for v in pixel_std]

    def close(a, b):
        return len(a) == len(b) and all(abs(x - y) <= 1e-3 * max(1.0, abs(y)) for x, y in zip(a, b))

    if input_format == expected["format"] and close(mean, expected["mean"]) and close(std, expected["std"]):
        return
    warnings.warn(
        f"{weights} was trained on {expected['format']} inputs normalised with mean {list(expected['mean'])} and "
        f"std {list(expected['std'])}, but the model reads {input_format} inputs with PIXEL_MEAN {mean} and PIXEL_STD "
        f"{std}: set INPUT.FORMAT: \"{expected['format']}\", MODEL.PIXEL_MEAN: {list(expected['mean'])} and "
        f"MODEL.PIXEL_STD: {list(expected['std'])} (configs/detectron2/Base-Mask-RCNN-FPN-SN.yaml does; in a "
        f"LazyConfig: model.input_format, model.pixel_mean, model.pixel_std and the mappers' image_format)",
        UserWarning, stacklevel=3)


def mark_recipe_hooks(model: torch.nn.Module) -> None:
    """Record that the SN/SSN recipe's hooks drive ``model`` (no warning at its first training step)."""
    setattr(unwrapped(model), RECIPE_HOOKS_MARK, True)


def _check_recipe_hooks(module: torch.nn.Module, args) -> None:
    # A forward pre-hook (a module-level function, so the model still pickles and deep-copies): at the first
    # training forward, a model whose config has MODEL.SSN but no recipe hooks gets one warning.
    if not module.training or not module.__dict__.pop("_ssn_plugins_check_hooks", False):
        return
    if not getattr(module, RECIPE_HOOKS_MARK, False):
        warnings.warn(
            f"this model has SN/SSN layers and trains without the recipe's hooks: the MODEL.SSN options "
            f"{', '.join(TRAINER_OPTIONS)} take effect only with ssn_plugins.detectron2.Trainer (tools/train_net.py), "
            f"or ssn_hooks(cfg, model, loader) and build_ssn_optimizer(cfg, model) in your own trainer "
            f"(detectron2's plain DefaultTrainer has neither)", UserWarning, stacklevel=2)


def complete_model(model: torch.nn.Module, cfg) -> torch.nn.Module:
    """What ``build_model(cfg)`` adds to a meta-architecture built from ``cfg`` (in place; returns ``model``).

    Channel Equilibrium (``MODEL.RESNETS.CE.ENABLED``), frozen SN/SSN layers in
    stages ``FREEZE_AT`` froze, the input-convention check of ``MODEL.WEIGHTS``
    (:func:`check_input_convention`), and, for a model with SN/SSN layers, a
    warning at its first training forward unless the recipe's hooks drive it.
    """
    ce = cfg.MODEL.RESNETS.get("CE")
    if ce is not None and ce.ENABLED:
        backbone = model.backbone
        add_channel_equilibrium(getattr(backbone, "bottom_up", backbone), ce.STEM_GROUP_SIZE, ce.GROUP_SIZE)
    freeze_switch_norms(model)
    check_input_convention(cfg.MODEL.WEIGHTS, cfg.INPUT.FORMAT, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD)
    if cfg.MODEL.get("SSN") is not None and any(isinstance(m, SwitchNorm) for m in model.modules()):
        model._ssn_plugins_check_hooks = True
        model.register_forward_pre_hook(_check_recipe_hooks)
    return model


def _with_config_options(meta_arch: Callable) -> Callable:
    @functools.wraps(meta_arch, updated=())
    def build(cfg, *args, **kwargs):
        """The meta-architecture built from ``cfg`` with ``cfg.MODEL.SSN``'s options (:func:`complete_model`)."""
        if args or kwargs or not isinstance(cfg, CfgNode):  # explicit arguments, not a config: as it is
            return meta_arch(cfg, *args, **kwargs)
        with norm_options(cfg):
            model = meta_arch(cfg)
        return complete_model(model, cfg)

    build.ssn_plugins = True
    return build


def register_meta_architectures() -> None:
    """Make ``META_ARCH_REGISTRY.get`` return meta-architectures that apply ``cfg.MODEL.SSN`` (idempotent).

    An attribute of that one registry instance; :func:`unregister_meta_architectures` removes it. Entries
    registered later (a project's own meta-architecture) are covered too.
    """
    from detectron2.modeling import META_ARCH_REGISTRY

    if getattr(META_ARCH_REGISTRY.get, "ssn_plugins", False):
        return
    lookup = META_ARCH_REGISTRY.get

    def get(name):
        return _with_config_options(lookup(name))

    get.__doc__ = lookup.__doc__
    get.__wrapped__ = lookup
    get.ssn_plugins = True
    META_ARCH_REGISTRY.get = get


def unregister_meta_architectures() -> None:
    """Undo :func:`register_meta_architectures`."""
    from detectron2.modeling import META_ARCH_REGISTRY

    if "get" in vars(META_ARCH_REGISTRY):
        del META_ARCH_REGISTRY.get


def build_model(cfg) -> torch.nn.Module:
    """detectron2's ``build_model`` (it applies ``cfg.MODEL.SSN`` once ``ssn_plugins.detectron2`` is imported)."""
    from detectron2.modeling import build_model as d2_build_model

    return d2_build_model(cfg)
