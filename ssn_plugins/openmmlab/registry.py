"""Registration of the SN/SSN/CE layers and CE backbones in mmengine's root ``MODELS`` registry.

``mmcv.cnn.build_norm_layer`` looks a ``norm_cfg`` type up in the root
registry, which mmseg, mmdet and mmaction2 all inherit, so one registration
serves every scope. It names the created attribute after the class's
``_abbr_``, which the layers declare as ``"bn"`` (keeping the ``bn1`` /
``conv1.bn`` names that OpenMMLab's checkpoints and mmaction2's 2-D→3-D
inflation read).
"""
from typing import Callable, List

from mmengine.registry import MODELS
from torch import nn

from ..layers import ChannelEquilibrium, SwitchNorm, norm_classes
from ..names import did_you_mean
from ..rebinding import unwrap_everywhere, wrap_everywhere

#: ``norm_cfg`` type -> layer class: the core's table, its 3-d classes with a ``3d`` suffix
NORM_LAYERS = {**norm_classes(2), **{f"{name}3d": cls for name, cls in norm_classes(3).items()}}

#: where mmcv's ``build_norm_layer`` is imported from: these packages' modules get the wrapper
OPENMMLAB_PACKAGES = ("mmcv", "mmengine", "mmseg", "mmdet", "mmaction", "mmpretrain", "mmdet3d", "mmpose")

_NORM_BASES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, SwitchNorm)


def norm_names() -> List[str]:
    """The ``norm_cfg`` types registered in mmengine's root ``MODELS`` registry and its scopes' registries."""
    registries = [MODELS, *MODELS.children.values()]
    return sorted({name for registry in registries for name, cls in registry.module_dict.items()
                   if isinstance(cls, type) and issubclass(cls, _NORM_BASES)})


def _naming_the_type(original: Callable) -> Callable:
    def build_norm_layer(cfg, num_features, postfix=""):
        try:
            return original(cfg, num_features, postfix)
        except KeyError as e:
            # mmcv words a missing type "Cannot find None in registry under scope name ...", without the type
            layer_type = cfg.get("type") if isinstance(cfg, dict) else None
            if not (isinstance(layer_type, str) and "Cannot find None" in str(e)):
                raise
            known = norm_names()
            raise KeyError(f"norm_cfg type {layer_type!r} is not a registered norm layer; registered (case-sensitive): "
                           f"{', '.join(known)}{did_you_mean(layer_type, known)}") from None

    build_norm_layer.__doc__ = original.__doc__
    return build_norm_layer


def register_norm_errors() -> None:
    """Make mmcv's ``build_norm_layer`` name an unknown ``norm_cfg`` type and the nearest registered ones.

    The wrapper replaces mmcv's function in every loaded OpenMMLab module (and is what later imports of
    ``mmcv.cnn`` get); it changes nothing else. Idempotent; :func:`unregister_norm_errors` undoes it.
    """
    from mmcv.cnn.bricks import norm

    wrap_everywhere(norm, "build_norm_layer", _naming_the_type, OPENMMLAB_PACKAGES)


def unregister_norm_errors() -> None:
    """Undo :func:`register_norm_errors`."""
    from mmcv.cnn.bricks import norm

    unwrap_everywhere(norm, "build_norm_layer", OPENMMLAB_PACKAGES)


def register_all() -> None:
    """Register every layer of :data:`NORM_LAYERS`, ``CE``, the CE backbones and the ``ssn://`` scheme, mmengine's
    checkpoint objects for ``weights_only`` loading, and the named-type error of :func:`register_norm_errors`
    (idempotent)."""
    from .channel_equilibrium import build_resnet3d_ce, build_resnet_ce
    from .checkpoint import allow_mmengine_checkpoints, register_model_zoo_scheme

    for name, cls in NORM_LAYERS.items():
        MODELS.register_module(name, module=cls, force=True)
    MODELS.register_module("CE", module=ChannelEquilibrium, force=True)
    MODELS.register_module("ResNetCE", module=build_resnet_ce, force=True)
    MODELS.register_module("ResNet3dCE", module=build_resnet3d_ce, force=True)
    register_model_zoo_scheme()
    allow_mmengine_checkpoints()
    register_norm_errors()
