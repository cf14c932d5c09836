"""Checkpoint loading in mmengine: the ``ssn://`` scheme, and mmengine's own checkpoints on torch >= 2.6.

``init_cfg=dict(type='Pretrained', checkpoint='ssn://NAME')`` (or a
backbone's ``pretrained='ssn://i3d/NAME'``) loads a published SN/SSN/CE
checkpoint converted for OpenMMLab (:func:`ssn_plugins.model_zoo.local_path`,
layout ``openmmlab`` unless the name says ``ssn://LAYOUT/NAME``), read with
``weights_only=True``; :func:`register_model_zoo_scheme` adds the scheme to
mmengine's ``CheckpointLoader``.

torch 2.6 made ``torch.load`` default to ``weights_only=True``. mmengine 0.10
calls it without the argument, and its resume checkpoints hold the message
hub's ``HistoryBuffer`` objects (numpy arrays, and a ``getattr`` reference to
the class's statistics methods), so ``--resume`` and testing a trained model
stop with an ``UnpicklingError``. Allow-listing ``builtins.getattr`` would
weaken every ``torch.load`` in the process, so instead the local files loaded
inside :func:`trusted_checkpoints` are read with ``weights_only=False``. Use
it only around runs whose checkpoints you trust (your own work directory,
files you converted); ``tools/mm_train.py`` and ``tools/mm_test.py`` do.
"""
import os.path as osp
from contextlib import contextmanager

import torch
from mmengine.runner.checkpoint import CheckpointLoader

from .. import model_zoo


def load_from_model_zoo(filename, map_location=None):
    """mmengine loader for ``ssn://[LAYOUT/]NAME``: the cached converted file, downloaded on first use."""
    path = model_zoo.local_path(filename, default_layout="openmmlab")
    return torch.load(path, map_location=map_location, weights_only=True)


def register_model_zoo_scheme() -> None:
    """Add ``ssn://`` to mmengine's ``CheckpointLoader`` schemes (idempotent)."""
    CheckpointLoader.register_scheme(model_zoo.SCHEME, load_from_model_zoo, force=True)


def load_from_local_trusted(filename, map_location):
    """mmengine's ``load_from_local`` with full unpickling (``weights_only=False``)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    return torch.load(filename, map_location=map_location, weights_only=False)


@contextmanager
def trusted_checkpoints():
    """Inside this block mmengine reads local checkpoint files with ``weights_only=False``.

    Remote schemes (``http://``, ``open-mmlab://``, ...) are unchanged. The
    previous loader is restored on exit, also after an error.
    """
    # _schemes is the loader table mmengine's register_scheme writes; the empty prefix is the local file system
    previous = CheckpointLoader._schemes.get("")
    CheckpointLoader.register_scheme("", load_from_local_trusted, force=True)
    try:
        yield
    finally:
        if previous is not None:
            CheckpointLoader.register_scheme("", previous, force=True)
