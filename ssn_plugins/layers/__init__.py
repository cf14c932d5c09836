"""The normalization modules."""
from .channel_equilibrium import (CE_BLOCK_GROUP_SIZE, CE_STAGES, CE_STEM_GROUP_SIZE, ChannelEquilibrium,
                                  InstanceReweight)
from .frozen_switch_norm import FrozenSwitchNorm
from .norm_act import NormActivation
from .sparse_switch_norm import (SparseSwitchNorm, SparseSwitchNorm1d, SparseSwitchNorm2d, SparseSwitchNorm3d,
                                 SyncSparseSwitchNorm, SyncSparseSwitchNorm1d, SyncSparseSwitchNorm2d,
                                 SyncSparseSwitchNorm3d)
from .switch_norm import (RATIO_PARAMETERS, SwitchNorm, SwitchNorm1d, SwitchNorm2d, SwitchNorm3d, SyncSwitchNorm,
                          SyncSwitchNorm1d, SyncSwitchNorm2d, SyncSwitchNorm3d)

#: norm name -> its classes for (any rank, 1-d, 2-d, 3-d) input: the one name table that
#: ``convert_norm``, our ResNet and both framework adapters read
NORM_TYPES = {
    "SN": (SwitchNorm, SwitchNorm1d, SwitchNorm2d, SwitchNorm3d),
    "SSN": (SparseSwitchNorm, SparseSwitchNorm1d, SparseSwitchNorm2d, SparseSwitchNorm3d),
    "SyncSN": (SyncSwitchNorm, SyncSwitchNorm1d, SyncSwitchNorm2d, SyncSwitchNorm3d),
    "SyncSSN": (SyncSparseSwitchNorm, SyncSparseSwitchNorm1d, SyncSparseSwitchNorm2d, SyncSparseSwitchNorm3d),
}


def norm_classes(dims: int) -> dict:
    """``{name: class}`` of :data:`NORM_TYPES` for ``dims``-d input (1, 2 or 3)."""
    return {name: classes[dims] for name, classes in NORM_TYPES.items()}
