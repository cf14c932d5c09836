"""Switchable norm layers followed by an activation: the norm + activation convention of timm's ``BatchNormAct2d``."""
from typing import Optional

from torch import Tensor, nn

__all__ = ["NormActivation"]


class NormActivation:
    """Mix-in for a :class:`~ssn_plugins.SwitchNorm` class: ``act(drop(norm(x)))``.

    The children ``drop`` and ``act`` (``nn.Identity`` when not given) are
    applied to the normalized output, as timm's norm + activation layers do;
    the layer's state dict has the norm's keys plus those of ``act`` (e.g. a
    ``PReLU``), as a ``BatchNormAct2d``'s has. :func:`~ssn_plugins.for_inference`
    keeps both, after the inference layer. ``ssn_plugins.timm`` defines the
    classes (``SparseSwitchNormAct2d``, ...), with timm's constructor
    (``act_layer``, ``apply_act``, ``drop_layer``).

    Shape:
        - Input: as for the norm class
        - Output: same shape as the input
    """

    def __init__(self, *args, act: Optional[nn.Module] = None, drop: Optional[nn.Module] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.drop = nn.Identity() if drop is None else drop
        self.act = nn.Identity() if act is None else act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(super().forward(x)))
