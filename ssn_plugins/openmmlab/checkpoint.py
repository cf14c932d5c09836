"""Checkpoint loading in mmengine: the ``ssn://`` scheme, and mmengine's own checkpoints on torch >= 2.6.

``init_cfg=dict(type='Pretrained', checkpoint='ssn://NAME')`` (or a
backbone's ``pretrained='ssn://i3d/NAME'``) loads a published SN/SSN/CE
checkpoint converted for OpenMMLab (:func:`ssn_plugins.model_zoo.local_path`,
layout ``openmmlab`` unless the name says ``ssn://LAYOUT/NAME``), read with
``weights_only=True``; :func:`register_model_zoo_scheme` adds the scheme to
mmengine's ``CheckpointLoader``.

torch 2.6 made ``torch.load`` default to ``weights_only=True``. mmengine 0.10
calls it without the argument, and its checkpoints hold the message hub's
``HistoryBuffer`` objects (numpy arrays and dtypes, and ``getattr`` references
to the class's statistics methods), so resuming and testing a trained model
(upstream's ``tools/train.py --resume`` and ``tools/test.py``, ``mim train`` /
``mim test``) would stop with an ``UnpicklingError``.
:func:`allow_mmengine_checkpoints` (run by the plugin's registration, so by
``custom_imports``) adds exactly those objects to torch's ``weights_only``
allow-list (``torch.serialization.add_safe_globals``), ``getattr`` as a
version that returns nothing but those statistics methods: mmengine's own
checkpoints load, and nothing else that ``weights_only`` refused before does.
:func:`trusted_checkpoints` reads the local files it is given with
``weights_only=False`` (files that hold other objects and that you trust), and
every other one weights-only, refusing what holds more with the file's name.
"""
import os.path as osp
import pickle
from contextlib import contextmanager
from typing import Iterable

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from .. import model_zoo
from ..checkpoint_io import pickled_imports, refused_import
from .compat import checkpoint_loader, history_buffer_statistics


def load_from_model_zoo(filename, map_location=None):
    """mmengine loader for ``ssn://[LAYOUT/]NAME``: the cached converted file, downloaded on first use."""
    path = model_zoo.local_path(filename, default_layout="openmmlab")
    return torch.load(path, map_location=map_location, weights_only=True)


def register_model_zoo_scheme() -> None:
    """Add ``ssn://`` to mmengine's ``CheckpointLoader`` schemes (idempotent)."""
    CheckpointLoader.register_scheme(model_zoo.SCHEME, load_from_model_zoo, force=True)


def history_buffer_method(owner, name: str):
    """``getattr`` as mmengine's checkpoints use it: only ``HistoryBuffer``'s statistics methods."""
    if owner is HistoryBuffer and name in history_buffer_statistics():
        return getattr(owner, name)
    raise pickle.UnpicklingError(f"weights_only load: getattr({owner!r}, {name!r}) is not one of HistoryBuffer's "
                                 f"statistics methods, the only getattr mmengine's checkpoints hold")


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read mmengine's own checkpoints (see the module docstring)."""
    HistoryBuffer()  # (registers the default statistics methods in the class table read above)
    numpy_dtypes = {type(np.dtype(code)) for code in "?bhilqpBHILQPefdgFDGO"}
    torch.serialization.add_safe_globals([
        HistoryBuffer, (history_buffer_method, "builtins.getattr"), np.ndarray, np.dtype, *numpy_dtypes,
        (np.core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        (np.core.multiarray.scalar, "numpy.core.multiarray.scalar")])


def _local_loader(trusted: Iterable[str]):
    """mmengine's ``load_from_local``: full unpickling for the files in ``trusted``, weights-only for any other."""
    trusted = {osp.realpath(osp.expanduser(str(path))) for path in trusted}

    def load_from_local(filename, map_location):
        filename = osp.expanduser(filename)
        if not osp.isfile(filename):
            raise FileNotFoundError(f"{filename} can not be found.")
        if osp.realpath(filename) in trusted:
            return torch.load(filename, map_location=map_location, weights_only=False)
        try:
            return torch.load(filename, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            imports = pickled_imports(filename)
            if not imports:
                raise
            raise pickle.UnpicklingError(
                f"{filename}: refused by weights-only loading: it holds objects beyond tensors and mmengine's own "
                f"({refused_import(e, imports)}). Only if you trust where the file came from, allow full unpickling "
                f"for it: "
                f"tools/mm_train.py --trust-checkpoint {filename}, tools/mm_test.py / tools/deploy.py --trust-pickle, "
                f"or ssn_plugins.openmmlab.trusted_checkpoints([{filename!r}])") from e

    return load_from_local


@contextmanager
def trusted_checkpoints(trusted: Iterable[str] = ()):
    """Inside this block mmengine reads the local files in ``trusted`` with full unpickling (``weights_only=False``).

    Every other local file is read weights-only, as torch >= 2.6 does by
    default (mmengine's own checkpoints load: :func:`allow_mmengine_checkpoints`),
    and a file that holds other objects is refused with its name, what it
    imports and how to trust it. Remote schemes (``http://``,
    ``open-mmlab://``, ...) are unchanged. The previous loader is restored on
    exit, also after an error.
    """
    previous = checkpoint_loader("")  # the empty prefix is the local file system
    CheckpointLoader.register_scheme("", _local_loader(trusted), force=True)
    try:
        yield
    finally:
        if previous is not None:
            CheckpointLoader.register_scheme("", previous, force=True)
