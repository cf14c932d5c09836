"""ssn_plugins: Switchable Normalization, Sparse Switchable Normalization and Channel Equilibrium.

The core (this package's top level) needs only PyTorch. Framework adapters
live in sub-packages and import their framework only when imported. The names
below are the public API; the plumbing the adapters share stays in its
modules (:mod:`ssn_plugins.radius`, :mod:`ssn_plugins.batch_stats`,
:mod:`ssn_plugins.selection`, ...).
"""
from .batch_stats import BATCH_AVERAGE_BATCHES, recompute_batch_statistics
from .convert import convert_norm, convert_sync
from .functional import CANDIDATES, selected_norm, switch_norm
from .inference import InferenceReport, fold_conv_norm, for_inference
from .layers import (NORM_TYPES, ChannelEquilibrium, FrozenSwitchNorm, SparseSwitchNorm, SparseSwitchNorm1d,
                     SparseSwitchNorm2d, SparseSwitchNorm3d, SwitchNorm, SwitchNorm1d, SwitchNorm2d, SwitchNorm3d,
                     SyncSparseSwitchNorm, SyncSparseSwitchNorm1d, SyncSparseSwitchNorm2d, SyncSparseSwitchNorm3d,
                     SyncSwitchNorm, SyncSwitchNorm1d, SyncSwitchNorm2d, SyncSwitchNorm3d)
from .optim import (RATIO_CLIP, RATIO_LR_FACTOR, RATIO_WEIGHT_DECAY, clip_ratio_grad_norm, install_ratio_clipping,
                    param_groups, ratio_parameters)
from .pretrained import from_pretrained, load_converted
from .radius import RadiusScheduler, reopen_selections, set_radius, sparse_layers
from .selection import count_selections, describe_selection, describe_state_dict, format_selection
from .sparsestmax import max_radius, sparsemax, sparsestmax

__version__ = "0.1.0"

__all__ = [
    # layers
    "SwitchNorm", "SwitchNorm1d", "SwitchNorm2d", "SwitchNorm3d", "SparseSwitchNorm", "SparseSwitchNorm1d",
    "SparseSwitchNorm2d", "SparseSwitchNorm3d", "SyncSwitchNorm", "SyncSwitchNorm1d", "SyncSwitchNorm2d",
    "SyncSwitchNorm3d", "SyncSparseSwitchNorm", "SyncSparseSwitchNorm1d", "SyncSparseSwitchNorm2d",
    "SyncSparseSwitchNorm3d", "ChannelEquilibrium", "FrozenSwitchNorm", "NORM_TYPES",
    # functional
    "switch_norm", "selected_norm", "CANDIDATES", "sparsestmax", "sparsemax", "max_radius",
    # putting them into a model
    "convert_norm", "convert_sync", "from_pretrained", "load_converted",
    # the training recipe
    "param_groups", "ratio_parameters", "install_ratio_clipping", "clip_ratio_grad_norm", "RATIO_CLIP",
    "RATIO_LR_FACTOR", "RATIO_WEIGHT_DECAY", "RadiusScheduler", "set_radius", "sparse_layers", "reopen_selections",
    "recompute_batch_statistics", "BATCH_AVERAGE_BATCHES",
    # what was selected, and deployment
    "describe_selection", "describe_state_dict", "format_selection", "count_selections", "for_inference",
    "fold_conv_norm", "InferenceReport",
    "__version__",
]
