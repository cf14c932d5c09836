"""``NORM: "SN"`` / ``"SSN"`` / ``"SyncSN"`` / ``"SyncSSN"`` wherever detectron2 resolves a norm name.

detectron2 has no norm registry: ``detectron2.layers.get_norm`` builds its
name table inside the function, and each model module binds its own
reference with ``from detectron2.layers import get_norm``. So
:func:`register_norms` wraps the function once and rebinds the wrapper in
``detectron2.layers``, ``detectron2.layers.batch_norm`` and every loaded
detectron2 module that still holds the original. Modules imported later
import the wrapper, so the import order does not matter. The layer options
(candidates, momentum, ...) come from ``cfg.MODEL.SSN`` through
:func:`configure_norms`, since ``get_norm`` receives only a name and a
channel count.
"""
import sys
from typing import Callable, Dict

from torch import nn

from ..layers import SparseSwitchNorm2d, SwitchNorm2d, SyncSparseSwitchNorm2d, SyncSwitchNorm2d

#: norm name -> class
NORM_LAYERS: Dict[str, type] = {
    "SN": SwitchNorm2d,
    "SSN": SparseSwitchNorm2d,
    "SyncSN": SyncSwitchNorm2d,
    "SyncSSN": SyncSparseSwitchNorm2d,
}

_layer_options: dict = {}


def configure_norms(cfg) -> None:
    """Take the layer options of :data:`NORM_LAYERS` from ``cfg.MODEL.SSN`` (see ``add_ssn_config``)."""
    ssn = cfg.MODEL.SSN
    _layer_options.clear()
    _layer_options.update(
        candidates=("IN", "LN", "BN") if ssn.USING_BN else ("IN", "LN"),
        eps=ssn.EPS, momentum=ssn.MOMENTUM, official_compat=ssn.OFFICIAL_COMPAT)


def build_norm(name: str, channels: int) -> nn.Module:
    """One of :data:`NORM_LAYERS` with the configured options."""
    return NORM_LAYERS[name](channels, **_layer_options)


def _wrap(original: Callable) -> Callable:
    def get_norm(norm, out_channels):
        if isinstance(norm, str) and norm in NORM_LAYERS:
            return build_norm(norm, out_channels)
        return original(norm, out_channels)

    get_norm.__doc__ = (original.__doc__ or "") + "\n    ssn_plugins adds: " + ", ".join(NORM_LAYERS) + "\n"
    get_norm.__wrapped__ = original
    get_norm.ssn_plugins = True
    return get_norm


def register_norms() -> Callable:
    """Make detectron2's ``get_norm`` accept the names of :data:`NORM_LAYERS` (idempotent). Returns the wrapper."""
    from detectron2.layers import batch_norm

    current = batch_norm.get_norm
    original = current.__wrapped__ if getattr(current, "ssn_plugins", False) else current
    wrapper = current if getattr(current, "ssn_plugins", False) else _wrap(original)
    for name, module in list(sys.modules.items()):
        if (name == "detectron2" or name.startswith("detectron2.")) and getattr(module, "get_norm", None) is original:
            module.get_norm = wrapper
    return wrapper
