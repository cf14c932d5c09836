"""Rebinding a detectron2 function in every module that imported it.

detectron2 has no registry for norm names or for ``build_model``'s post-processing; each module binds its own
reference (``from detectron2.layers import get_norm``), so a wrapper must replace the original everywhere.
"""
import sys
from typing import Callable


def rebind(attribute: str, original: Callable, wrapper: Callable) -> None:
    """Set ``module.<attribute> = wrapper`` in every loaded detectron2 module that holds ``original``.

    Modules imported later import the wrapper from the module it was first rebound in, so the import order
    does not matter as long as the defining module is patched.
    """
    for name, module in list(sys.modules.items()):
        if (name == "detectron2" or name.startswith("detectron2.")) and getattr(module, attribute, None) is original:
            setattr(module, attribute, wrapper)
