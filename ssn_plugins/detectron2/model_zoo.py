"""``MODEL.WEIGHTS: "ssn://NAME"``: the published SN/SSN/CE checkpoints in detectron2.

An iopath ``PathHandler`` for the ``ssn://`` prefix, registered on
detectron2's ``PathManager`` (as detectron2 registers ``detectron2://``):
``get_local_path`` downloads, checks and converts the release's file on
first use (:func:`ssn_plugins.model_zoo.local_path`, layout ``detectron2``
unless the name says ``ssn://LAYOUT/NAME``) and returns the cached ``.pkl``,
which ``DetectionCheckpointer`` reads with its usual heuristics. Build the
model with ``MODEL.RESNETS.STRIDE_IN_1X1: False`` (the published ResNets
stride in the 3x3 convolution) and, for a CE model, ``MODEL.RESNETS.CE.ENABLED``.
"""
from detectron2.utils.file_io import PathManager
from iopath.common.file_io import PathHandler

from .. import model_zoo

__all__ = ["SSNModelZooHandler", "register_model_zoo_handler"]


class SSNModelZooHandler(PathHandler):
    """Resolves ``ssn://[LAYOUT/]NAME`` to a cached local file in detectron2's layout."""

    def _get_supported_prefixes(self):
        return [model_zoo.SCHEME]

    def _get_local_path(self, path, **kwargs):
        return str(model_zoo.local_path(path, default_layout="detectron2"))

    def _open(self, path, mode="r", buffering=-1, **kwargs):
        return open(self._get_local_path(path), mode, buffering=buffering)

    def _isfile(self, path, **kwargs):
        try:  # a catalogue name names one file (fetched when it is opened)
            model_zoo.parse_url(path, "detectron2")
        except model_zoo.ModelZooError:
            return False
        return True


def register_model_zoo_handler() -> None:
    """Register :class:`SSNModelZooHandler` on detectron2's ``PathManager`` (idempotent)."""
    if model_zoo.SCHEME not in PathManager._path_handlers:  # iopath refuses a prefix registered twice
        PathManager.register_handler(SSNModelZooHandler())
