"""An optimizer-wrapper constructor that knows the SN/SSN/CE parameters.

mmengine's ``DefaultOptimWrapperConstructor`` recognises norm layers with
``isinstance(m, (_BatchNorm, _InstanceNorm, GroupNorm, LayerNorm))``, so it
would treat an SN layer's γ/β as ordinary weights and its ratio logits as
flat parameters. This subclass adds the published recipe without per-config
``custom_keys``::

    optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, weight_decay=5e-4),
                         constructor='SSNOptimWrapperConstructor',
                         paramwise_cfg=dict(norm_decay_mult=0.0))   # optional, as for BatchNorm
"""
from typing import List, Optional

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

from ..layers import ChannelEquilibrium, SwitchNorm
from ..optim import (RATIO_CLIP, RATIO_GROUP, RATIO_LR_FACTOR, RATIO_PARAMETERS, RATIO_WEIGHT_DECAY,
                     check_ratio_clip, install_ratio_clipping)

#: ``paramwise_cfg`` keys: mmengine 0.10's ``DefaultOptimWrapperConstructor`` reads the first eight, this class the rest
PARAMWISE_KEYS = ("custom_keys", "bias_lr_mult", "bias_decay_mult", "norm_decay_mult", "dwconv_decay_mult",
                  "flat_decay_mult", "bypass_duplicate", "dcn_offset_lr_mult",
                  "ratio_lr_mult", "ratio_decay_mult", "ratio_clip_grad")


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(force=True)
class SSNOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` plus the SN/SSN recipe.

    - SN/SSN ratio logits (``mean_weight``, ``var_weight``) get
      ``lr * ratio_lr_mult`` and ``weight_decay * ratio_decay_mult``
      (``paramwise_cfg`` keys; defaults 0.1 and 0.0, the papers' recipe).
    - SN/SSN γ/β and CE's own parameters count as norm parameters: they follow
      ``norm_decay_mult`` and are exempt from ``bias_lr_mult``, exactly as
      BatchNorm's are.
    - ``custom_keys`` still take precedence over both rules, as upstream.
    - Before every optimizer step the gradient norm of all ratio logits
      together is clipped to ``ratio_clip_grad`` (default 1.0, the published
      recipe; ``None`` turns it off), through a step pre-hook on the optimizer,
      so it also holds under ``AmpOptimWrapper`` (whose scaler unscales first).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        # kept in paramwise_cfg (the parent ignores unknown keys): a non-empty
        # paramwise_cfg is what makes the parent build per-parameter groups
        paramwise_cfg = dict(paramwise_cfg or {})
        unknown = sorted(set(paramwise_cfg) - set(PARAMWISE_KEYS))
        if unknown:
            # mmengine ignores unknown keys silently; a typo such as ratio_lr_mul would change nothing
            raise KeyError(f"SSNOptimWrapperConstructor: unknown paramwise_cfg key(s) {unknown}; "
                           f"known keys: {list(PARAMWISE_KEYS)}")
        self.ratio_lr_mult = float(paramwise_cfg.setdefault("ratio_lr_mult", RATIO_LR_FACTOR))
        self.ratio_decay_mult = float(paramwise_cfg.setdefault("ratio_decay_mult", RATIO_WEIGHT_DECAY))
        self.ratio_clip_grad = check_ratio_clip(paramwise_cfg.setdefault("ratio_clip_grad", RATIO_CLIP),
                                                "paramwise_cfg ratio_clip_grad")
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        self._ratio_count = 0

    def _is_custom(self, full_name: str) -> bool:
        return any(key in full_name for key in self.paramwise_cfg.get("custom_keys", {}))

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = "", is_dcn_module=None) -> None:
        first = len(params)
        super().add_params(params, module, prefix, is_dcn_module)
        if not isinstance(module, (SwitchNorm, ChannelEquilibrium)):
            return
        own = {id(p): name for name, p in module.named_parameters(recurse=False)}
        norm_decay_mult = self.paramwise_cfg.get("norm_decay_mult", None)
        for group in params[first:]:
            name = own.get(id(group["params"][0]))
            if name is None or self._is_custom(f"{prefix}.{name}"):
                continue
            if isinstance(module, SwitchNorm) and name in RATIO_PARAMETERS:
                group["lr"] = self.base_lr * self.ratio_lr_mult
                group[RATIO_GROUP] = True
                if self.base_wd is not None:
                    group["weight_decay"] = self.base_wd * self.ratio_decay_mult
                self._ratio_count += 1
                continue
            if name == "bias":
                group.pop("lr", None)  # bias_lr_mult does not apply to norm biases
            if self.base_wd is not None and norm_decay_mult is not None:
                group["weight_decay"] = self.base_wd * norm_decay_mult

    def __call__(self, model: nn.Module):
        self._ratio_count = 0
        optim_wrapper = super().__call__(model)
        if self._ratio_count:
            print_log(f"SSNOptimWrapperConstructor: {self._ratio_count} SN/SSN ratio logits at "
                      f"lr x {self.ratio_lr_mult:g}, weight decay x {self.ratio_decay_mult:g}, "
                      + ("gradient norm not clipped" if self.ratio_clip_grad is None
                         else f"gradient norm clipped to {self.ratio_clip_grad:g}"), logger="current")
            install_ratio_clipping(optim_wrapper.optimizer, model, self.ratio_clip_grad)
        return optim_wrapper
