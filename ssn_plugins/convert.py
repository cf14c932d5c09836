"""Swapping normalization layers in an existing model."""
import warnings
from typing import Optional, Type

import torch
from torch import nn

from .layers import NORM_TYPES, SwitchNorm

__all__ = ["convert_norm", "convert_sync", "NORM_TYPES", "CONVERTIBLE"]

_RANK_OF_BN = {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}
_SYNC_OF = {plain: sync for plain, sync in zip(NORM_TYPES["SN"] + NORM_TYPES["SSN"],
                                               NORM_TYPES["SyncSN"] + NORM_TYPES["SyncSSN"])}


_HOOK_TABLES = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
                "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


def take_place(old: nn.Module, new: nn.Module) -> nn.Module:
    """``new`` set up to replace ``old``: ``old``'s forward (pre-)hooks and train/eval mode; returns ``new``.

    Work attached to a norm layer's output (Channel Equilibrium in an
    OpenMMLab ResNet runs as a forward hook on the norm it follows, in that
    norm's mode) must survive the layer being converted, frozen for
    inference or folded into its convolution (where ``new`` is an
    ``nn.Identity``).
    """
    if new is not old:
        for table in _HOOK_TABLES:
            if hasattr(old, table) and hasattr(new, table):
                getattr(new, table).update(getattr(old, table))
        new.train(old.training)
    return new


def _replace_children(module: nn.Module, replace, memo: Optional[dict] = None) -> nn.Module:
    """``replace`` every module (depth first from the top); a module reached twice gets the same replacement.

    The replacement keeps the replaced module's forward hooks and mode (:func:`take_place`).
    """
    memo = {} if memo is None else memo
    if id(module) in memo:
        return memo[id(module)]
    new = replace(module)
    if new is not None:
        memo[id(module)] = take_place(module, new)
        return new
    memo[id(module)] = module
    for name, child in list(module._modules.items()):  # not named_children(), which skips a repeated module
        if child is not None:
            module.add_module(name, _replace_children(child, replace, memo))
    return module


#: What :func:`convert_norm` replaces by default.
CONVERTIBLE = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)


def convert_norm(model: nn.Module, to: str = "SSN", layer_types: tuple = CONVERTIBLE, **kwargs) -> nn.Module:
    """Replace every BatchNorm (1d/2d/3d, SyncBatchNorm) and GroupNorm in ``model`` by SN/SSN layers.

    ``to`` is ``"SN"``, ``"SSN"``, ``"SyncSN"`` or ``"SyncSSN"``. BatchNormNd
    becomes the matching ``…Nd`` class, SyncBatchNorm and GroupNorm the generic
    one. Carried over: γ/β, ``eps``, the training mode, frozen parameters (a
    layer none of whose parameters requires gradients becomes a layer none of
    whose parameters, ratios included, does), sharing (one module used in two
    places stays one module) and, from BatchNorm, ``momentum`` (``None`` too),
    ``track_running_stats``, the running statistics and ``num_batches_tracked``.
    ``kwargs`` go to the new layers' constructors and take precedence (e.g.
    ``using_bn=False``, ``radius=0.0``); they are checked before anything is
    replaced. Works in place on ``model``'s children and returns the model (or
    the new layer if ``model`` itself is a norm layer), like
    ``nn.SyncBatchNorm.convert_sync_batchnorm``. Warns when nothing was converted.

    ``layer_types`` narrows what is replaced. A ``BatchNorm1d`` that sees
    ``(N, C)`` features (after a ``Linear``) cannot use the IN candidate:
    leave it out (``layer_types=(nn.BatchNorm2d, ...)``) or convert with
    ``candidates=("LN", "BN")``; the layer's error says so otherwise.
    """
    if to not in NORM_TYPES:
        raise ValueError(f"convert_norm: unknown target {to!r}; choose from {list(NORM_TYPES)}")
    classes = NORM_TYPES[to]
    try:  # a typo in a keyword fails here, not only once some layer is converted
        classes[0](8, **kwargs)
    except TypeError as e:
        raise TypeError(f"convert_norm: {e}") from None
    converted = []

    def replace(m: nn.Module):
        if not isinstance(m, layer_types):
            return None
        if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
            raise ValueError(f"convert_norm: {type(m).__name__} has not inferred its channel count yet; run one "
                             f"forward pass before converting")
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            cls = classes[_RANK_OF_BN.get(type(m), 0)]
            options = {"eps": m.eps, "affine": m.affine, "momentum": m.momentum,
                       "track_running_stats": m.track_running_stats}
        elif isinstance(m, nn.GroupNorm):
            cls = classes[0]
            options = {"eps": m.eps, "affine": m.affine}
        else:
            return None
        options.update(kwargs)
        ref = m.weight if m.affine else next(m.buffers(), None)
        new = cls(m.num_features if hasattr(m, "num_features") else m.num_channels, **options,
                  device=None if ref is None else ref.device)
        with torch.no_grad():
            if m.affine and new.affine:
                new.weight.copy_(m.weight)
                new.bias.copy_(m.bias)
            if getattr(m, "running_mean", None) is not None and new.running_mean is not None:
                new.running_mean.copy_(m.running_mean)
                new.running_var.copy_(m.running_var)
                if getattr(m, "num_batches_tracked", None) is not None:
                    new.num_batches_tracked.copy_(m.num_batches_tracked)
        if ref is not None:
            new.to(ref.dtype)
        own = list(m.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            new.requires_grad_(False)
        new.train(m.training)
        converted.append(new)
        return new

    result = _replace_children(model, replace)
    if not converted:
        warnings.warn(f"convert_norm: no layer of the types {[t.__name__ for t in layer_types]} found in "
                      f"{type(model).__name__}; nothing was converted", stacklevel=2)
    return result


def _constructor_options(m: SwitchNorm) -> dict:
    return {"eps": m.eps, "momentum": m.momentum, "candidates": m.candidates, "affine": m.affine,
            "track_running_stats": m.track_running_stats, "official_compat": m.official_compat}


def convert_sync(model: nn.Module, process_group=None) -> nn.Module:
    """Replace every SN/SSN layer by its synchronised variant, keeping all state (selections too).

    The counterpart of ``nn.SyncBatchNorm.convert_sync_batchnorm``.
    """
    def replace(m: nn.Module):
        sync_cls: Type[SwitchNorm] = _SYNC_OF.get(type(m))
        if sync_cls is None:
            return None
        ref = m.mean_weight
        new = sync_cls(m.num_features, **_constructor_options(m), process_group=process_group,
                       device=ref.device, dtype=ref.dtype)
        new.load_state_dict(m.state_dict())
        new.train(m.training)
        return new

    return _replace_children(model, replace)
