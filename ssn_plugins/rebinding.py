"""Rebinding a framework function in every loaded module that imported it (framework-free).

Some framework functions have no registry or hook: detectron2's ``get_norm``
builds its name table inside the function, and mmcv's ``build_norm_layer``
words its own errors. Each module binds its own reference
(``from detectron2.layers import get_norm``), so a wrapper must replace the
original everywhere; the adapters do it through :func:`wrap_everywhere` and
undo it with :func:`unwrap_everywhere`.
"""
import sys
from typing import Callable, Sequence


def rebind(attribute: str, original: Callable, wrapper: Callable, packages: Sequence[str]) -> int:
    """Set ``module.<attribute> = wrapper`` in every loaded module of ``packages`` that holds ``original``.

    Modules imported later import the wrapper from the module they import it
    from, so the order of imports does not matter once the defining module and
    its re-exporting packages are loaded. Returns how many modules changed.
    """
    changed = 0
    for name, module in list(sys.modules.items()):
        if any(name == p or name.startswith(p + ".") for p in packages) and \
                getattr(module, attribute, None) is original:
            setattr(module, attribute, wrapper)
            changed += 1
    return changed


def wrap_everywhere(holder, attribute: str, make_wrapper: Callable, packages: Sequence[str]) -> Callable:
    """Wrap ``holder.<attribute>`` with ``make_wrapper(original)`` and rebind the wrapper in ``packages`` (idempotent).

    The wrapper gets ``__wrapped__`` (the original) and an ``ssn_plugins`` mark;
    a second call rebinds the existing wrapper. Returns the wrapper.
    """
    current = getattr(holder, attribute)
    if getattr(current, "ssn_plugins", False):
        original, wrapper = current.__wrapped__, current
    else:
        original, wrapper = current, make_wrapper(current)
        wrapper.__wrapped__, wrapper.ssn_plugins = original, True
    rebind(attribute, original, wrapper, packages)
    return wrapper


def unwrap_everywhere(holder, attribute: str, packages: Sequence[str]) -> None:
    """Undo :func:`wrap_everywhere`: the original back in every module of ``packages`` that holds the wrapper."""
    current = getattr(holder, attribute)
    if getattr(current, "ssn_plugins", False):
        rebind(attribute, current, current.__wrapped__, packages)
