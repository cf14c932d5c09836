"""SN/SSN norm + activation layers with the constructor of timm's ``BatchNormAct2d``.

timm's models build their norm + activation layers as
``norm_act_layer(num_features, act_layer=..., apply_act=..., inplace=..., drop_layer=...)``
(``timm.layers.get_norm_act_layer``); these classes take the same
arguments, plus any of the switchable layer's own (``candidates``,
``radius``, ...), and compute ``act(drop(norm(x)))`` as timm's do.
"""
from typing import Any, Dict, Optional, Type

from timm.layers import create_act_layer
from torch import nn

from ..layers import (NormActivation, SparseSwitchNorm, SparseSwitchNorm2d, SwitchNorm, SwitchNorm2d,
                      SyncSparseSwitchNorm, SyncSparseSwitchNorm2d, SyncSwitchNorm, SyncSwitchNorm2d)

__all__ = ["SwitchNormAct", "SwitchNormAct2d", "SparseSwitchNormAct", "SparseSwitchNormAct2d", "SyncSwitchNormAct",
           "SyncSwitchNormAct2d", "SyncSparseSwitchNormAct", "SyncSparseSwitchNormAct2d", "NORM_ACT_TYPES"]


class _TimmNormAct(NormActivation):
    """timm's norm + activation constructor over :class:`~ssn_plugins.layers.NormActivation`."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: Optional[bool] = None, apply_act: bool = True, act_layer=nn.ReLU,
                 act_kwargs: Optional[Dict[str, Any]] = None, inplace: bool = True,
                 drop_layer: Optional[Type[nn.Module]] = None, device=None, dtype=None, **kwargs) -> None:
        act = create_act_layer(act_layer, **{"inplace": inplace, **(act_kwargs or {})}) if apply_act else None
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats, device=device, dtype=dtype,
                         act=act, drop=drop_layer() if drop_layer is not None else None, **kwargs)


class SyncSwitchNormAct(_TimmNormAct, SyncSwitchNorm):
    """:class:`~ssn_plugins.SyncSwitchNorm` + activation (timm's ``SyncBatchNormAct`` converts to it)."""


class SyncSwitchNormAct2d(_TimmNormAct, SyncSwitchNorm2d):
    """:class:`~ssn_plugins.SyncSwitchNorm2d` + activation."""


class SyncSparseSwitchNormAct(_TimmNormAct, SyncSparseSwitchNorm):
    """:class:`~ssn_plugins.SyncSparseSwitchNorm` + activation."""


class SyncSparseSwitchNormAct2d(_TimmNormAct, SyncSparseSwitchNorm2d):
    """:class:`~ssn_plugins.SyncSparseSwitchNorm2d` + activation."""


class SwitchNormAct(_TimmNormAct, SwitchNorm):
    """:class:`~ssn_plugins.SwitchNorm` + activation (timm's ``GroupNormAct`` converts to it)."""
    sync_variant = SyncSwitchNormAct


class SwitchNormAct2d(_TimmNormAct, SwitchNorm2d):
    """:class:`~ssn_plugins.SwitchNorm2d` + activation, in place of timm's ``BatchNormAct2d``."""
    sync_variant = SyncSwitchNormAct2d


class SparseSwitchNormAct(_TimmNormAct, SparseSwitchNorm):
    """:class:`~ssn_plugins.SparseSwitchNorm` + activation."""
    sync_variant = SyncSparseSwitchNormAct


class SparseSwitchNormAct2d(_TimmNormAct, SparseSwitchNorm2d):
    """:class:`~ssn_plugins.SparseSwitchNorm2d` + activation, in place of timm's ``BatchNormAct2d``."""
    sync_variant = SyncSparseSwitchNormAct2d


#: norm name -> its norm + activation classes for (any rank, 2-d) input, as ``ssn_plugins.NORM_TYPES``
NORM_ACT_TYPES = {
    "SN": (SwitchNormAct, SwitchNormAct2d),
    "SSN": (SparseSwitchNormAct, SparseSwitchNormAct2d),
    "SyncSN": (SyncSwitchNormAct, SyncSwitchNormAct2d),
    "SyncSSN": (SyncSparseSwitchNormAct, SyncSparseSwitchNormAct2d),
}
