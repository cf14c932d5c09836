"""Registering SN/SSN with timm: layer names for ``timm.create_model`` and conversions for ``convert_norm``."""
from timm.layers import norm as timm_norm
from timm.layers import norm_act as timm_norm_act
from torch import nn

from ..convert import (convert_plain, converted_layer, register_norm_converter, target_class,
                       unregister_norm_converter)
from ..layers import NORM_TYPES
from . import compat
from .norm_act import NORM_ACT_TYPES

__all__ = ["register", "unregister", "TIMM_NAMES"]

#: our names as timm writes them (lower case, no underscores): ``norm_layer="ssn"``
TIMM_NAMES = {name: name.lower() for name in NORM_TYPES}

# timm's norm subclasses that override the norm's forward: (class, adds an activation)
_TIMM_NORMS = ((timm_norm_act.BatchNormAct2d, True), (timm_norm_act.SyncBatchNormAct, True),
               (timm_norm_act.GroupNormAct, True), (timm_norm_act.GroupNorm1Act, True),
               (timm_norm.GroupNorm, False), (timm_norm.GroupNorm1, False))


def _convert_norm_act(module: nn.Module, to: str, **kwargs) -> nn.Module:
    # the norm + activation class of the rank convert_norm picks (BatchNormAct2d -> ...Act2d), holding the
    # original activation and dropout modules themselves (their state and settings, e.g. inplace, go along)
    rank_classes = NORM_ACT_TYPES[to]
    cls = rank_classes[1] if target_class(module, to) is NORM_TYPES[to][2] else rank_classes[0]
    new = converted_layer(module, cls, apply_act=False, **kwargs)
    new.drop = getattr(module, "drop", None) or nn.Identity()
    new.act = getattr(module, "act", None) or nn.Identity()
    return new


def _entries():
    for name, timm_name in TIMM_NAMES.items():
        norm_2d, (act_any, act_2d) = NORM_TYPES[name][2], NORM_ACT_TYPES[name]
        yield compat.NORM_BY_NAME, timm_name, norm_2d
        yield compat.NORM_ACT_BY_NAME, timm_name, act_2d
        yield compat.NORM_ACT_BY_NORM_NAME, norm_2d.__name__.lower(), act_2d
        yield compat.NORM_ACT_BY_NORM_NAME, NORM_TYPES[name][0].__name__.lower(), act_any


def register() -> None:
    """Make timm accept SN/SSN (idempotent; ``import ssn_plugins.timm`` calls it).

    - ``norm_layer="sn"`` / ``"ssn"`` / ``"syncsn"`` / ``"syncssn"``, the 2-D
      classes (``ssn_plugins.SparseSwitchNorm2d``, ...) or a ``functools.partial``
      of them in ``timm.create_model``, also in models that fuse the activation
      into the norm (EfficientNet, RegNet, ...: they get the classes of
      :mod:`.norm_act`, with the model's activation);
    - :func:`ssn_plugins.convert_norm` on timm's norm + activation layers
      (``BatchNormAct2d``, ``SyncBatchNormAct``, ``GroupNormAct``, ``GroupNorm1Act``),
      which keep their activation, and on timm's ``GroupNorm`` / ``GroupNorm1``.
    """
    for table, key, value in _entries():
        table[key] = value
    for classes in NORM_ACT_TYPES.values():
        compat.NORM_ACT_CLASSES.update(classes)
        compat.TAKES_ACT_LAYER.update(classes)
    for cls, with_act in _TIMM_NORMS:
        register_norm_converter(cls, _convert_norm_act if with_act else convert_plain)


def unregister() -> None:
    """Undo :func:`register`: timm's tables and ``convert_norm`` as they were without this adapter."""
    for table, key, value in _entries():
        if table.get(key) is value:
            del table[key]
    for classes in NORM_ACT_TYPES.values():
        compat.NORM_ACT_CLASSES.difference_update(classes)
        compat.TAKES_ACT_LAYER.difference_update(classes)
    for cls, _ in _TIMM_NORMS:
        unregister_norm_converter(cls)
