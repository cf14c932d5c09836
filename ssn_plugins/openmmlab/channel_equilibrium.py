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
``frozen_stages`` freeze it with its norm (parameters too). The hook moves
with the norm when ``ssn_plugins`` converts or folds it.
"""
import functools

import torch
from mmengine.registry import MODELS

from ..layers.channel_equilibrium import CE_BLOCK_GROUP_SIZE, CE_STAGES, CE_STEM_GROUP_SIZE, ChannelEquilibrium

__all__ = ["add_channel_equilibrium", "build_resnet_ce", "build_resnet3d_ce"]


def _apply_ce(ce: ChannelEquilibrium, norm: torch.nn.Module, inputs, output):
    if ce.training != norm.training:  # frozen with the norm it follows (norm_eval, frozen_stages)
        ce.train(norm.training)
    return ce(output)


def _attach(owner: torch.nn.Module, name: str, norm: torch.nn.Module, channels: int, group_size: int) -> None:
    ref = next(norm.parameters(), None)
    ce = ChannelEquilibrium(channels, group_size=group_size, device=None if ref is None else ref.device)
    if ref is not None and not ref.requires_grad:
        ce.requires_grad_(False)
    owner.add_module(name, ce)
    norm.register_forward_hook(functools.partial(_apply_ce, ce))


def _stem_norm(backbone: torch.nn.Module) -> torch.nn.Module:
    if getattr(backbone, "deep_stem", False):  # ResNetV1c/d: the last norm of the three-conv stem
        return [m for m in backbone.stem if not isinstance(m, (torch.nn.Conv2d, torch.nn.ReLU))][-1]
    if hasattr(backbone, "norm1"):  # mmdet / mmseg ResNet
        return backbone.norm1
    return backbone.conv1.norm  # mmaction2 ResNet3d: a ConvModule stem


def _last_norm(block: torch.nn.Module) -> torch.nn.Module:
    if hasattr(block, "norm3"):  # mmdet / mmseg Bottleneck
        return block.norm3
    if hasattr(block, "norm2"):  # mmdet / mmseg BasicBlock
        return block.norm2
    return (block.conv3 if hasattr(block, "conv3") else block.conv2).norm  # mmaction2 blocks: ConvModules


def _channels(norm: torch.nn.Module) -> int:
    return getattr(norm, "num_features", None) or norm.num_channels


def add_channel_equilibrium(backbone: torch.nn.Module, stem_group_size: int = CE_STEM_GROUP_SIZE,
                            group_size: int = CE_BLOCK_GROUP_SIZE) -> int:
    """Add CE to an OpenMMLab ``ResNet`` / ``ResNetV1c`` / ``ResNet3d`` in place; returns how many were added."""
    if hasattr(backbone, "ce1"):
        raise ValueError(f"{type(backbone).__name__} already has Channel Equilibrium (ce1)")
    stem = _stem_norm(backbone)
    _attach(backbone, "ce1", stem, _channels(stem), stem_group_size)
    count = 1
    for stage in CE_STAGES:
        for block in getattr(backbone, f"layer{stage}", []):
            norm = _last_norm(block)
            _attach(block, "ce", norm, _channels(norm), group_size)
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
