"""Channel Equilibrium in detectron2's ResNet (``MODEL.RESNETS.CE.ENABLED``).

CE goes where the CE paper puts it (:data:`ssn_plugins.layers.CE_STAGES`):
after the stem's norm and after the last norm of every block in stages 1-3
(detectron2's res2-res4), before the residual addition and ReLU.
detectron2's ``Conv2d`` applies its norm inside ``forward``, so CE runs as a
forward hook on that convolution and lives on it as ``.ce``:
parameter names are detectron2's plus ``stem.conv1.ce.*`` and
``resK.i.conv3.ce.*`` (``conv2`` in basic blocks). ``build_model`` (see
:mod:`.build`) adds it when the config enables it.
"""
import torch

from ..layers.channel_equilibrium import CE_BLOCK_GROUP_SIZE, CE_STAGES, CE_STEM_GROUP_SIZE, ChannelEquilibrium


def _apply_ce(conv, inputs, output):
    return conv.ce(output)


def _attach(conv, group_size: int) -> None:
    conv.ce = ChannelEquilibrium(conv.out_channels, group_size=group_size).to(conv.weight.device)
    if not conv.weight.requires_grad:  # a stage frozen by FREEZE_AT keeps its CE as it is too
        conv.ce.requires_grad_(False)
    conv.register_forward_hook(_apply_ce)


def add_channel_equilibrium(resnet: torch.nn.Module, stem_group_size: int = CE_STEM_GROUP_SIZE,
                            group_size: int = CE_BLOCK_GROUP_SIZE) -> int:
    """Add CE to a detectron2 ``ResNet`` in the CE paper's places; returns how many blocks got one."""
    _attach(resnet.stem.conv1, stem_group_size)
    count = 1
    for stage in CE_STAGES:
        for block in getattr(resnet, f"res{stage + 1}", []):
            _attach(block.conv3 if hasattr(block, "conv3") else block.conv2, group_size)
            count += 1
    return count
