"""ssn_plugins: Switchable Normalization, Sparse Switchable Normalization and Channel Equilibrium.

The core (this package's top level) needs only PyTorch. Framework adapters
live in sub-packages and import their framework only when imported.
"""
from .batch_stats import (BATCH_AVERAGE_BATCHES, average_statistics_across_processes, layers_with_batch_statistics,
                          recompute_batch_statistics)
from .convert import convert_norm, convert_sync
from .functional import CANDIDATES, selected_norm, switch_norm
from .inference import InferenceReport, fold_conv_norm, for_inference
from .layers import (NORM_TYPES, RATIO_PARAMETERS, ChannelEquilibrium, FrozenSwitchNorm, InstanceReweight,
                     SparseSwitchNorm, SparseSwitchNorm1d, SparseSwitchNorm2d, SparseSwitchNorm3d, SwitchNorm,
                     SwitchNorm1d, SwitchNorm2d, SwitchNorm3d, SyncSparseSwitchNorm, SyncSparseSwitchNorm1d,
                     SyncSparseSwitchNorm2d, SyncSparseSwitchNorm3d, SyncSwitchNorm, SyncSwitchNorm1d,
                     SyncSwitchNorm2d, SyncSwitchNorm3d)
from .optim import (RATIO_CLIP, RATIO_LR_FACTOR, RATIO_WEIGHT_DECAY, check_ratio_clip, clip_ratio_grad_norm,
                    install_ratio_clipping, param_groups, ratio_parameters)
from .radius import RadiusScheduler, batched_ratios, precompute_ratios, reopen_selections, set_radius, sparse_layers
from .selection import (count_selections, describe_selection, describe_state_dict, format_selection, mean_ratios,
                        radius_scalars, ratio_scalars)
from .sparsestmax import max_radius, sparsemax, sparsestmax

__version__ = "0.1.0"
