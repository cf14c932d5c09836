"""The mmengine internals this adapter uses, in one place: written against mmengine 0.10.7 (mmcv 2.1.0).

mmengine offers no public way to read a registered checkpoint loader, to reach the training loader's settings
once the runner has taken them, to run a model's forward without its train/val/test step, or to list the
statistics methods its checkpoints may ``getattr``; an upgrade has this file to check.
"""
from typing import Callable, Optional

from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

__all__ = ["checkpoint_loader", "train_dataloader_settings", "run_forward", "history_buffer_statistics"]


def checkpoint_loader(prefix: str) -> Optional[Callable]:
    """The loader ``CheckpointLoader.register_scheme`` holds for ``prefix`` ("" is the local file system)."""
    return CheckpointLoader._schemes.get(prefix)


def train_dataloader_settings(runner):
    """The runner's ``train_dataloader`` settings: its config's, else the dict the runner keeps until the train
    loop builds a loader from it (``None`` when neither is there)."""
    return runner.cfg.get("train_dataloader") or getattr(runner, "_train_dataloader", None)


def run_forward(model, data, mode: str):
    """``model``'s forward on preprocessed ``data`` in ``mode``, without the optimizer step of ``train_step``."""
    return model._run_forward(data, mode=mode)


def history_buffer_statistics() -> dict:
    """The ``HistoryBuffer`` statistics methods mmengine's checkpoints name (``getattr(HistoryBuffer, NAME)``);
    the defaults are in the class table once a ``HistoryBuffer`` has been made (:func:`allow_mmengine_checkpoints`)."""
    return HistoryBuffer._statistics_methods
