"""Channel Equilibrium in OpenMMLab's ResNets: ``type='ResNetCE'`` and ``type='ResNet3dCE'``.

``backbone=dict(type='ResNetCE', ...)`` builds the current scope's ``ResNet``
(mmdet's, mmseg's; ``base='ResNetV1c'`` picks another) with the same
arguments, ``backbone=dict(type='ResNet3dCE', ...)`` mmaction2's ``ResNet3d``,
then adds CE where the CE paper puts it (:data:`ssn_plugins.layers.CE_STAGES`):
after the stem's norm and after the last norm of every block in stages 1-3,
before the residual addition and ReLU. The modules are named as in the
published CE-ResNet-50, ``ce1`` on the backbone and ``layerK.i.ce`` in the
blocks, so ``tools/convert_checkpoint.py --to openmmlab`` / ``--to i3d`` files
(and ``ssn://`` names of CE models) load with ``init_cfg`` / ``pretrained``.

OpenMMLab's blocks call their norms inline, so CE runs as a forward hook on
the norm it follows and in that norm's mode: ``norm_eval`` and
``frozen_stages`` freeze it with its norm (parameters too). The block (the
backbone, for the stem) re-installs that hook before each forward, so CE
survives the norm being rebuilt (mmengine's SyncBN conversions, our
``convert_*`` and ``for_inference``).
"""

import torch
from mmengine.registry import MODELS

from ..layers.channel_equilibrium import CE_BLOCK_GROUP_SIZE, CE_STAGES, CE_STEM_GROUP_SIZE, ChannelEquilibrium

__all__ = ["add_channel_equilibrium", "build_resnet_ce", "build_resnet3d_ce", "with_channel_equilibrium"]


class _ApplyCE:
    """Forward hook on a norm: its output through ``ce``, in the norm's mode (frozen with it)."""

    def __init__(self, ce: ChannelEquilibrium):
        self.ce = ce

    def __call__(self, norm: torch.nn.Module, inputs, output):
        if self.ce.training != norm.training:  # norm_eval, frozen_stages
            self.ce.train(norm.training)
        return self.ce(output)


class _KeepCEOnNorm:
    """Forward pre-hook on the module that owns a CE: (re)installs the CE hook on the norm at ``norm_path``.

    Utilities that rebuild norms (mmengine's ``revert_sync_batchnorm`` and
    ``convert_sync_batchnorm``, which the Runner applies) drop the hooks of
    the modules they replace; checked before every forward, CE follows
    whichever module holds the norm's place.
    """

    def __init__(self, norm_path: str, ce_name: str):
        self.norm_path, self.ce_name = norm_path, ce_name

    def __call__(self, owner: torch.nn.Module, args) -> None:
        norm = owner
        for part in self.norm_path.split("."):
            norm = getattr(norm, part)
        ce = getattr(owner, self.ce_name)
        if not any(isinstance(h, _ApplyCE) and h.ce is ce for h in norm._forward_hooks.values()):
            norm.register_forward_hook(_ApplyCE(ce))


def _attach(owner: torch.nn.Module, ce_name: str, norm_path: str, group_size: int) -> None:
    norm = owner
    for part in norm_path.split("."):
        norm = getattr(norm, part)
    ref = next(norm.parameters(), None)
    channels = getattr(norm, "num_features", None) or norm.num_channels
    ce = ChannelEquilibrium(channels, group_size=group_size, device=None if ref is None else ref.device)
    if ref is not None and not ref.requires_grad:  # a frozen stage (frozen_stages) keeps its CE frozen too
        ce.requires_grad_(False)
    owner.add_module(ce_name, ce)
    owner.register_forward_pre_hook(_KeepCEOnNorm(norm_path, ce_name))


def _stem_norm_path(backbone: torch.nn.Module) -> str:
    if getattr(backbone, "deep_stem", False):  # ResNetV1c/d: the last norm of the three-conv stem
        return "stem." + [n for n, m in backbone.stem.named_children()
                          if not isinstance(m, (torch.nn.Conv2d, torch.nn.ReLU))][-1]
    if hasattr(backbone, "norm1"):  # mmdet / mmseg ResNet
        return "norm1"
    return "conv1.norm"  # mmaction2 ResNet3d: a ConvModule stem


def _last_norm_path(block: torch.nn.Module) -> str:
    if hasattr(block, "norm3"):  # mmdet / mmseg Bottleneck
        return "norm3"
    if hasattr(block, "norm2"):  # mmdet / mmseg BasicBlock
        return "norm2"
    return "conv3.norm" if hasattr(block, "conv3") else "conv2.norm"  # mmaction2 blocks: ConvModules


def add_channel_equilibrium(backbone: torch.nn.Module, stem_group_size: int = CE_STEM_GROUP_SIZE,
                            group_size: int = CE_BLOCK_GROUP_SIZE) -> int:
    """Add CE to an OpenMMLab ``ResNet`` / ``ResNetV1c`` / ``ResNet3d`` in place; returns how many were added."""
    if hasattr(backbone, "ce1"):
        raise ValueError(f"{type(backbone).__name__} already has Channel Equilibrium (ce1)")
    _attach(backbone, "ce1", _stem_norm_path(backbone), stem_group_size)
    count = 1
    for stage in CE_STAGES:
        for block in getattr(backbone, f"layer{stage}", []):
            _attach(block, "ce", _last_norm_path(block), group_size)
            count += 1
    return count


def _build(base: str, kwargs: dict, stem_group_size: int, group_size: int) -> torch.nn.Module:
    # MODELS.build resolves `base` in the scope being built (mmdet, mmseg, mmaction), as for any backbone type
    backbone = MODELS.build(dict(type=base, **kwargs))
    add_channel_equilibrium(backbone, stem_group_size, group_size)
    return backbone


def build_resnet_ce(base: str = "ResNet", ce_stem_group_size: int = CE_STEM_GROUP_SIZE,
                    ce_group_size: int = CE_BLOCK_GROUP_SIZE, **kwargs) -> torch.nn.Module:
    """``type='ResNetCE'``: the scope's ``base`` ResNet built from ``kwargs``, with CE."""
    return _build(base, kwargs, ce_stem_group_size, ce_group_size)


def build_resnet3d_ce(base: str = "ResNet3d", ce_stem_group_size: int = CE_STEM_GROUP_SIZE,
                      ce_group_size: int = CE_BLOCK_GROUP_SIZE, **kwargs) -> torch.nn.Module:
    """``type='ResNet3dCE'``: mmaction2's ``base`` (``ResNet3d``) built from ``kwargs``, with CE."""
    return _build(base, kwargs, ce_stem_group_size, ce_group_size)


def with_channel_equilibrium(backbone_cfg: dict) -> dict:
    """A backbone config with CE: ``type='ResNetCE'`` / ``'ResNet3dCE'`` built over its original type."""
    kind = backbone_cfg.get("type", "")
    if kind in ("ResNetCE", "ResNet3dCE"):
        return dict(backbone_cfg)
    if not kind.startswith("ResNet"):
        raise ValueError(f"Channel Equilibrium goes into OpenMMLab's ResNets (ResNet, ResNetV1c, ResNet3d); this "
                         f"backbone is {kind!r}")
    return {**backbone_cfg, "type": "ResNet3dCE" if kind.startswith("ResNet3d") else "ResNetCE", "base": kind}
