"""The normalization modules."""
from .channel_equilibrium import (CE_BLOCK_GROUP_SIZE, CE_STAGES, CE_STEM_GROUP_SIZE, ChannelEquilibrium,
                                  InstanceReweight)
from .frozen_switch_norm import FrozenSwitchNorm
from .sparse_switch_norm import (SparseSwitchNorm, SparseSwitchNorm1d, SparseSwitchNorm2d, SparseSwitchNorm3d,
                                 SyncSparseSwitchNorm, SyncSparseSwitchNorm1d, SyncSparseSwitchNorm2d,
                                 SyncSparseSwitchNorm3d)
from .switch_norm import (SwitchNorm, SwitchNorm1d, SwitchNorm2d, SwitchNorm3d, SyncSwitchNorm, SyncSwitchNorm1d,
                          SyncSwitchNorm2d, SyncSwitchNorm3d)
