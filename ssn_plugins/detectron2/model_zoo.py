"""``ssn://NAME`` weights and detectron2's model-zoo configs, as iopath paths on detectron2's ``PathManager``.

- ``MODEL.WEIGHTS: "ssn://NAME"``: :class:`SSNModelZooHandler` (as detectron2
  registers ``detectron2://``); ``get_local_path`` downloads, checks and
  converts the release's file on first use
  (:func:`ssn_plugins.model_zoo.local_path`, layout ``detectron2`` unless the
  name says ``ssn://LAYOUT/NAME``) and returns the cached ``.pkl``, which
  ``DetectionCheckpointer`` reads with its usual heuristics. Build the model
  with ``MODEL.RESNETS.STRIDE_IN_1X1: False`` (the published ResNets stride
  in the 3x3 convolution) and, for a CE model, ``MODEL.RESNETS.CE.ENABLED``.
- ``_BASE_: "https://raw.githubusercontent.com/facebookresearch/detectron2/main/configs/X.yaml"``:
  :class:`ModelZooConfigHandler` reads that upstream file from the installed
  detectron2's model zoo (``detectron2.model_zoo.get_config_file("X.yaml")``)
  instead of downloading it. The shipped configs inherit detectron2's this way:
  fvcore's ``merge_from_file`` passes an ``https://`` base to detectron2's
  ``PathManager`` as it is (any other base is joined to the including file's
  folder), and without this package the same URL downloads the same file.
"""
import posixpath

from detectron2.utils.file_io import PathManager
from iopath.common.file_io import PathHandler

from .. import model_zoo
from .compat import registered_prefixes

__all__ = ["SSNModelZooHandler", "ModelZooConfigHandler", "MODEL_ZOO_CONFIGS", "register_path_handlers"]

#: where detectron2's model-zoo configs live upstream: ``_BASE_: MODEL_ZOO_CONFIGS + "COCO-.../x.yaml"``
MODEL_ZOO_CONFIGS = "https://raw.githubusercontent.com/facebookresearch/detectron2/main/configs/"


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


class ModelZooConfigHandler(PathHandler):
    """Resolves :data:`MODEL_ZOO_CONFIGS` ``+ NAME`` to the installed detectron2's copy of config ``NAME``."""

    def _get_supported_prefixes(self):
        return [MODEL_ZOO_CONFIGS]

    def _get_local_path(self, path, **kwargs):
        from detectron2 import model_zoo as d2_model_zoo

        # a base's own relative _BASE_ arrives joined to it: ".../COCO-InstanceSegmentation/../Base-RCNN-FPN.yaml"
        name = posixpath.normpath(path[len(MODEL_ZOO_CONFIGS):])
        return d2_model_zoo.get_config_file(name)

    def _open(self, path, mode="r", buffering=-1, **kwargs):
        return open(self._get_local_path(path), mode, buffering=buffering)

    def _isfile(self, path, **kwargs):
        try:
            self._get_local_path(path)
        except RuntimeError:  # detectron2: "... not available in Model Zoo!"
            return False
        return True


def register_path_handlers() -> None:
    """Register both handlers on detectron2's ``PathManager`` (idempotent; iopath refuses a prefix twice)."""
    for handler in (SSNModelZooHandler(), ModelZooConfigHandler()):
        if handler._get_supported_prefixes()[0] not in registered_prefixes():
            PathManager.register_handler(handler)
