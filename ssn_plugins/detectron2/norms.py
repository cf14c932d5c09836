"""``NORM: "SN"`` / ``"SSN"`` / ``"SyncSN"`` / ``"SyncSSN"`` wherever detectron2 resolves a norm name.

detectron2 has no norm registry: ``detectron2.layers.get_norm`` builds its
name table inside the function, and each model module binds its own
reference. :func:`register_norms` wraps the function once and rebinds the
wrapper everywhere (see :mod:`ssn_plugins.rebinding`); :func:`unregister_norms` puts the
original back. ``get_norm`` receives only a name and a channel count, so the
layer options of ``cfg.MODEL.SSN`` reach it through :func:`norm_options`, a
context that every ``build_model(cfg)`` opens for the config being built
(:mod:`.build`) and closes afterwards: two models built from two configs each
get their own options, and nothing leaks into a later build.

A LazyConfig names the layer and its options directly, with no context:
``norm=L(SwitchNormLayer)(name="SSN", candidates=("IN", "LN", "BN"))``
instantiates to a callable that detectron2's ``get_norm`` calls with the
channel count.
"""
import contextlib
import contextvars
from typing import Callable, Dict, Iterator, Optional

from torch import nn

from ..layers import norm_classes
from ..names import did_you_mean
from ..rebinding import unwrap_everywhere, wrap_everywhere

#: norm name -> class (the core's table, for 2-d input)
NORM_LAYERS: Dict[str, type] = norm_classes(2)

#: detectron2's own names (as of 0.7), listed in the error on an unknown one
DETECTRON2_NORMS = ("BN", "SyncBN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN")

# The options of the config whose model is being built; None outside a build (layer defaults).
_build_options: contextvars.ContextVar[Optional[dict]] = contextvars.ContextVar("ssn_norm_options", default=None)


def layer_options(cfg) -> dict:
    """The constructor options of :data:`NORM_LAYERS` that ``cfg.MODEL.SSN`` sets (see ``add_ssn_config``)."""
    ssn = cfg.MODEL.get("SSN")
    if ssn is None:
        return {}  # a config without add_ssn_config: the layers' defaults, which are add_ssn_config's defaults
    candidates = ("IN", "LN", "BN") if ssn.USING_BN else ("IN", "LN")
    if ssn.get("GN_GROUPS", 0):
        candidates += (f"GN{ssn.GN_GROUPS}",)
    return {"candidates": candidates, "eps": ssn.EPS,
            "momentum": ssn.MOMENTUM, "official_compat": ssn.OFFICIAL_COMPAT}


@contextlib.contextmanager
def norm_options(cfg) -> Iterator[dict]:
    """Within this context, ``get_norm("SSN", C)`` and the other names build layers with ``cfg``'s options.

    Every ``build_model(cfg)`` opens it for you; use it directly only when
    calling a backbone or head builder yourself.
    """
    options = layer_options(cfg)
    token = _build_options.set(options)
    try:
        yield options
    finally:
        _build_options.reset(token)


def build_norm(name: str, channels: int) -> nn.Module:
    """One of :data:`NORM_LAYERS` with the options of the config being built (the defaults outside a build)."""
    return NORM_LAYERS[name](channels, **(_build_options.get() or {}))


def _unknown_norm(norm: str) -> ValueError:
    known = list(DETECTRON2_NORMS) + list(NORM_LAYERS)
    return ValueError(f"unknown norm {norm!r} (names are case-sensitive): choose from {known} or ''"
                      f"{did_you_mean(norm, known)}")


class SwitchNormLayer:
    """``SwitchNormLayer("SSN", **options)(channels)``: a norm for detectron2's ``norm=`` arguments.

    The LazyConfig way of giving layer options (a string ``"SSN"`` in a
    LazyConfig builds layers with their defaults, as no ``cfg.MODEL.SSN``
    exists there)::

        norm = L(SwitchNormLayer)(name="SSN", candidates=("IN", "LN"))
        model.backbone.bottom_up.stem.norm = norm

    ``options`` are the layer's constructor arguments; they are checked here,
    when the config is instantiated. Picklable (LazyConfig saves configs).
    """

    def __init__(self, name: str = "SSN", **options) -> None:
        if name not in NORM_LAYERS:
            raise _unknown_norm(name)
        try:
            NORM_LAYERS[name](8, **options)
        except TypeError as e:
            raise TypeError(f"SwitchNormLayer({name!r}): {e}") from None
        self.name, self.options = name, options

    def __call__(self, channels: int) -> nn.Module:
        return NORM_LAYERS[self.name](channels, **self.options)

    def __repr__(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"SwitchNormLayer({self.name!r}{options})"


def _wrap(original: Callable) -> Callable:
    def get_norm(norm, out_channels):
        if isinstance(norm, str) and norm in NORM_LAYERS:
            return build_norm(norm, out_channels)
        try:
            return original(norm, out_channels)
        except KeyError as e:  # detectron2 looks the name up in a dict literal: a bare KeyError('SNN')
            if isinstance(norm, str) and e.args == (norm,):
                raise _unknown_norm(norm) from None
            raise

    get_norm.__doc__ = (original.__doc__ or "") + "\n    ssn_plugins adds: " + ", ".join(NORM_LAYERS) + "\n"
    return get_norm


def register_norms() -> Callable:
    """Make detectron2's ``get_norm`` accept the names of :data:`NORM_LAYERS` (idempotent). Returns the wrapper.

    ``import ssn_plugins.detectron2`` calls it. Every loaded detectron2 module's
    ``get_norm`` becomes the wrapper, and modules loaded later import the
    wrapper, so the order of imports does not matter.
    """
    from detectron2.layers import batch_norm

    return wrap_everywhere(batch_norm, "get_norm", _wrap, ["detectron2"])


def unregister_norms() -> None:
    """Undo :func:`register_norms`: detectron2's own ``get_norm`` everywhere again."""
    from detectron2.layers import batch_norm

    unwrap_everywhere(batch_norm, "get_norm", ["detectron2"])
