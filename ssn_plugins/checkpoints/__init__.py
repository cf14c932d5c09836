"""Published SN/SSN/CE checkpoints: reading a release (:mod:`.published`), renaming it for each framework
(:mod:`.layouts`) and inflating it for I3D (:mod:`.i3d`); file reading and writing is :mod:`ssn_plugins.checkpoint_io`.
"""
from ..checkpoint_io import ConversionError, load_checkpoint_file, save_atomically
from ..layers import NORM_TYPES
from .i3d import I3D_R50_INFLATE, inflate_openmmlab_resnet, to_i3d
from .layouts import TARGETS, to_detectron2, to_layout, to_openmmlab
from .published import PublishedModel, canonical_switch_norm, read_published, unwrap_state_dict

__all__ = ["PublishedModel", "read_published", "unwrap_state_dict", "canonical_switch_norm", "to_detectron2",
           "to_openmmlab", "to_i3d", "to_layout", "TARGETS", "inflate_openmmlab_resnet", "I3D_R50_INFLATE",
           "ConversionError", "load_checkpoint_file", "save_atomically", "SWITCHABLE"]

#: norm names whose layers take ``candidates`` (the name table's)
SWITCHABLE = tuple(NORM_TYPES)
