"""Swapping normalization layers in an existing model."""
import warnings
from typing import Callable, Dict, Optional, Type

import torch
from torch import nn

from .layers import NORM_TYPES, SparseSwitchNorm, SwitchNorm
from .layers.switch_norm import _Synchronized

__all__ = ["convert_norm", "convert_sync", "NORM_TYPES", "CONVERTIBLE", "is_plain_norm", "register_norm_converter",
           "unregister_norm_converter", "converted_layer", "convert_plain", "target_class"]

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

# The forwards of torch.nn's own norm classes: a subclass that keeps one of them computes a plain norm.
_PLAIN_FORWARDS = (nn.modules.batchnorm._BatchNorm.forward, nn.SyncBatchNorm.forward, nn.GroupNorm.forward)

# Converters for norm subclasses that compute more than the norm (timm's norm + activation layers), by exact
# class: adapters register them (register_norm_converter); a subclass of a registered class is not covered.
_CONVERTERS: Dict[type, Callable] = {}


def is_plain_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm or GroupNorm whose forward is ``torch.nn``'s own.

    A subclass that overrides ``forward`` (timm's ``BatchNormAct2d`` applies an
    activation after the norm) computes something a norm layer alone does not:
    :func:`convert_norm` converts it only through a registered converter, and
    :func:`~ssn_plugins.for_inference` never folds it into a convolution.
    """
    return isinstance(module, CONVERTIBLE) and type(module).forward in _PLAIN_FORWARDS


def register_norm_converter(norm_class: type, converter: Callable) -> None:
    """Let :func:`convert_norm` convert instances of exactly ``norm_class`` with ``converter``.

    ``converter(module, to, **kwargs)`` returns the replacement of ``module``
    (usually :func:`converted_layer` of a class that keeps what ``module``
    adds to the norm, such as its activation). Adapters register the norm
    subclasses of their framework (``ssn_plugins.timm`` for timm's norm-act
    layers); registering a class again replaces its converter.
    """
    if not (isinstance(norm_class, type) and issubclass(norm_class, CONVERTIBLE)):
        raise TypeError(f"register_norm_converter: {norm_class!r} is not a BatchNorm or GroupNorm class")
    _CONVERTERS[norm_class] = converter


def unregister_norm_converter(norm_class: type) -> None:
    """Undo :func:`register_norm_converter` for ``norm_class`` (nothing happens when it was not registered)."""
    _CONVERTERS.pop(norm_class, None)


def _bn_rank(module: nn.Module) -> int:
    """1, 2 or 3 for a BatchNorm1d/2d/3d (or a subclass), 0 for any other norm (SyncBatchNorm, GroupNorm)."""
    return next((rank for base, rank in _RANK_OF_BN.items() if isinstance(module, base)), 0)


def target_class(module: nn.Module, to: str) -> Type[SwitchNorm]:
    """The class of :data:`NORM_TYPES` that replaces norm ``module``: the ``…Nd`` one for a BatchNormNd."""
    return NORM_TYPES[to][_bn_rank(module)]


def convert_plain(module: nn.Module, to: str, **kwargs) -> SwitchNorm:
    """What :func:`convert_norm` makes of a plain norm: :func:`converted_layer` of :func:`target_class`
    (the converter to register for a subclass whose forward computes a plain norm in its own way)."""
    return converted_layer(module, target_class(module, to), **kwargs)


def converted_layer(module: nn.Module, cls: Type[SwitchNorm], **kwargs) -> SwitchNorm:
    """A ``cls`` layer carrying over the state of BatchNorm or GroupNorm ``module`` (see :func:`convert_norm`).

    ``kwargs`` go to ``cls`` and take precedence over what is carried over.
    """
    if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
        raise ValueError(f"convert_norm: {type(module).__name__} has not inferred its channel count yet; run one "
                         f"forward pass before converting")
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        # a tracking BatchNorm leaves it to the layer (tracked whenever BN is one of its candidates)
        options = {"eps": module.eps, "affine": module.affine, "momentum": module.momentum,
                   "track_running_stats": None if module.track_running_stats else False}
        channels = module.num_features
    else:
        options = {"eps": module.eps, "affine": module.affine}
        channels = module.num_channels
    options.update(kwargs)
    ref = module.weight if module.affine else next(module.buffers(), None)
    new = cls(channels, **options, device=None if ref is None else ref.device)
    with torch.no_grad():
        if module.affine and new.affine:
            new.weight.copy_(module.weight)
            new.bias.copy_(module.bias)
        if getattr(module, "running_mean", None) is not None and new.running_mean is not None:
            new.running_mean.copy_(module.running_mean)
            new.running_var.copy_(module.running_var)
            if getattr(module, "num_batches_tracked", None) is not None:
                new.num_batches_tracked.copy_(module.num_batches_tracked)
    if ref is not None:
        new.to(ref.dtype)
    own = list(module.parameters(recurse=False))
    if own and not any(p.requires_grad for p in own):
        new.requires_grad_(False)
        # its ratios could never train: an SSN layer keeps computing the frozen BatchNorm, not a uniform mixture
        # that a growing radius would fix on IN by a tie-break
        if (isinstance(new, SparseSwitchNorm) and isinstance(module, nn.modules.batchnorm._BatchNorm)
                and "BN" in new.candidates):
            new.fix("mean", "BN")
            new.fix("var", "BN")
    new.train(module.training)
    return new


def convert_norm(model: nn.Module, to: str = "SSN", layer_types: tuple = CONVERTIBLE, **kwargs) -> nn.Module:
    """Replace every BatchNorm (1d/2d/3d, SyncBatchNorm) and GroupNorm in ``model`` by SN/SSN layers.

    ``to`` is ``"SN"``, ``"SSN"``, ``"SyncSN"`` or ``"SyncSSN"``. BatchNormNd
    (and its subclasses) becomes the matching ``…Nd`` class, SyncBatchNorm and
    GroupNorm the generic one. Carried over: γ/β, ``eps``, the training mode,
    frozen parameters (a layer none of whose parameters requires gradients
    becomes a layer none of whose parameters, ratios included, does; a frozen
    BatchNorm becomes an SSN layer fixed on BN, as its ratios cannot train), sharing
    (one module used in two places stays one module), forward hooks and, from
    BatchNorm, ``momentum`` (``None`` too), ``track_running_stats``, the
    running statistics and ``num_batches_tracked``. ``kwargs`` go to the new
    layers' constructors and take precedence (e.g. ``using_bn=False``,
    ``radius=0.0``); they are checked before anything is replaced. Works in
    place on ``model``'s children and returns the model (or the new layer if
    ``model`` itself is a norm layer), like
    ``nn.SyncBatchNorm.convert_sync_batchnorm``. Warns when nothing was converted.

    A subclass whose forward computes more than the norm (timm's
    ``BatchNormAct2d`` applies its activation) is converted only by a
    converter an adapter registered (:func:`register_norm_converter`;
    ``import ssn_plugins.timm`` registers timm's norm-act layers, which then
    keep their activation); any other such subclass raises a ``TypeError``
    naming it before anything is replaced, since replacing it by a norm
    layer would drop what it computes.

    ``layer_types`` narrows what is replaced. A ``BatchNorm1d`` that sees
    ``(N, C)`` features (after a ``Linear``) cannot use the IN candidate:
    leave it out (``layer_types=(nn.BatchNorm2d, ...)``) or convert with
    ``candidates=("LN", "BN")``; the layer's error says so otherwise.
    """
    if to not in NORM_TYPES:
        raise ValueError(f"convert_norm: unknown target {to!r}; choose from {list(NORM_TYPES)}")
    try:  # a typo in a keyword fails here, not only once some layer is converted
        NORM_TYPES[to][0](8, **kwargs)
    except TypeError as e:
        raise TypeError(f"convert_norm: {e}") from None
    def selected(m: nn.Module) -> bool:
        return isinstance(m, layer_types) and isinstance(m, CONVERTIBLE)

    refused = sorted({f"{type(m).__module__}.{type(m).__qualname__}" for m in model.modules()
                      if selected(m) and not is_plain_norm(m) and type(m) not in _CONVERTERS})
    if refused:
        timm = any(name.startswith("timm.") for name in refused)
        raise TypeError(
            f"convert_norm: {', '.join(refused)} override the norm's forward (e.g. an activation after it), which a "
            f"switchable norm layer would drop; " + ("import ssn_plugins.timm first, which converts timm's norm + "
                                                     "activation layers keeping their activation, or " if timm else "")
            + "register a converter for them (ssn_plugins.convert.register_norm_converter)")
    converted = []

    def replace(m: nn.Module):
        if not selected(m):
            return None
        new = _CONVERTERS.get(type(m), convert_plain)(m, to, **kwargs)
        converted.append(new)
        return new

    result = _replace_children(model, replace)
    if not converted:
        warnings.warn(f"convert_norm: no layer of the types {[t.__name__ for t in layer_types]} found in "
                      f"{type(model).__name__}; nothing was converted", stacklevel=2)
    return result


def _constructor_options(m: SwitchNorm) -> dict:
    options = {"eps": m.eps, "momentum": m.momentum, "candidates": m.candidates, "affine": m.affine,
               "track_running_stats": m.track_running_stats, "official_compat": m.official_compat,
               "double_backward": m.double_backward}
    if hasattr(m, "_initial_radius"):  # SSN: the radius reset_parameters() returns to (the buffer is copied)
        options["radius"] = m._initial_radius
    return options


def sync_class(m: SwitchNorm) -> Optional[Type[SwitchNorm]]:
    """The synchronised counterpart of ``m``'s class (``None`` for a layer already synchronised).

    A subclass of ours names its counterpart in a ``sync_variant`` class
    attribute (``ssn_plugins.timm``'s norm + activation layers do).
    """
    if isinstance(m, _Synchronized):
        return None
    counterpart = _SYNC_OF.get(type(m)) or type(m).__dict__.get("sync_variant")
    if counterpart is None:
        raise TypeError(f"convert_sync: {type(m).__module__}.{type(m).__qualname__} has no synchronised "
                        f"counterpart; give the class a sync_variant attribute naming one")
    return counterpart


def convert_sync(model: nn.Module, process_group=None) -> nn.Module:
    """Replace every SN/SSN layer by its synchronised variant, keeping all state (selections too).

    The counterpart of ``nn.SyncBatchNorm.convert_sync_batchnorm``. The
    layers' constructor options (``double_backward``, an SSN layer's initial
    radius) and their child modules (a norm + activation layer's ``act``) go
    with them.
    """
    def replace(m: nn.Module):
        if not isinstance(m, SwitchNorm):
            return None
        cls = sync_class(m)
        if cls is None:
            return None
        ref = m.mean_weight
        new = cls(m.num_features, **_constructor_options(m), process_group=process_group,
                  device=ref.device, dtype=ref.dtype)
        for name, child in m.named_children():
            new.add_module(name, child)
        new.load_state_dict(m.state_dict())
        new.train(m.training)
        return new

    return _replace_children(model, replace)
