"""The detectron2 internals this adapter and its tools use, in one place: written against detectron2 0.6 (the
sal-detectron2 0.7.2 build that tools/with_env.sh installs) and iopath 0.1.9.

detectron2 keeps the evaluation results of ``DefaultTrainer.train()`` only privately when no
``TEST.EXPECTED_RESULTS`` is set, and iopath lists the registered path handlers only privately; the function
rebinding behind ``get_norm`` (detectron2 has no norm registry) is :mod:`ssn_plugins.rebinding`'s.
"""
from detectron2.utils.file_io import PathManager

__all__ = ["registered_prefixes", "last_eval_results"]


def registered_prefixes() -> set:
    """The path prefixes detectron2's ``PathManager`` has a handler for."""
    return set(PathManager._path_handlers)


def last_eval_results(trainer) -> dict:
    """The results of the trainer's last evaluation (``EvalHook``'s), ``{}`` before any."""
    return getattr(trainer, "_last_eval_results", None) or {}
