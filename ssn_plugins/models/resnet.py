"""ImageNet ResNets with any normalization: the architectures of the SN and SSN model zoos.

Parameter names follow the published SN/SSN checkpoints (``conv1``, ``sn1``,
``layerK.i.conv{1,2,3}``, ``layerK.i.sn{1,2,3}``, ``layerK.0.downsample.{0,1}``,
``fc``; v2 adds ``sn_out``), so after :mod:`ssn_plugins.checkpoints` strips
their wrapper a published file loads with ``load_state_dict`` directly. The
norm layers keep the ``sn`` names whatever the norm is. Loading by catalogue
name sits above this file: :func:`ssn_plugins.from_pretrained`.
"""
from typing import Callable, Dict, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..layers.channel_equilibrium import CE_BLOCK_GROUP_SIZE, CE_STAGES, CE_STEM_GROUP_SIZE, ChannelEquilibrium
from ..layers import NORM_TYPES, norm_classes

__all__ = ["ResNet", "resnet", "norm_factory", "DEPTHS", "NORMS"]

NormSpec = Union[str, Callable[[int], nn.Module]]

#: depth -> (block kind, blocks per stage)
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}

#: norm name -> class (called as ``cls(channels, **norm_kwargs)``)
NORMS = {
    "BN": nn.BatchNorm2d,
    "SyncBN": nn.SyncBatchNorm,
    "GN": lambda c, num_groups=32, **kw: nn.GroupNorm(num_groups, c, **kw),
    **norm_classes(2),
}


def norm_factory(norm: NormSpec, **norm_kwargs) -> Callable[[int], nn.Module]:
    """``channels -> norm layer`` from a name in :data:`NORMS` or a callable."""
    if callable(norm):
        return lambda c: norm(c, **norm_kwargs)
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose from {sorted(NORMS)} or pass a callable")
    cls = NORMS[norm]
    return lambda c: cls(c, **norm_kwargs)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34); ``ce`` after ``sn2`` when CE is on."""
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: Optional[nn.Module], norm, ce=None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.sn1 = norm(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.sn2 = norm(planes)
        if ce is not None:
            self.ce = ce(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_norm(self) -> nn.Module:
        return self.sn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.sn1(self.conv1(x)))
        out = self.sn2(self.conv2(out))
        if hasattr(self, "ce"):
            out = self.ce(out)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1, 3x3 (with the stride), 1x1 convolutions; ``ce`` after ``sn3`` when CE is on."""
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: Optional[nn.Module], norm, ce=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.sn1 = norm(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.sn2 = norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.sn3 = norm(planes * 4)
        if ce is not None:
            self.ce = ce(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_norm(self) -> nn.Module:
        return self.sn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.sn1(self.conv1(x)))
        out = self.relu(self.sn2(self.conv2(out)))
        out = self.sn3(self.conv3(out))
        if hasattr(self, "ce"):
            out = self.ce(out)
        return self.relu(out + identity)


class PreActBasicBlock(nn.Module):
    """The v2 (pre-activation) basic block of the SN model zoo: norm → ReLU → conv, twice."""
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: Optional[nn.Module], norm, ce=None):
        super().__init__()
        self.sn1 = norm(inplanes)
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.sn2 = norm(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_norm(self) -> nn.Module:
        return self.sn2

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.sn1(x))
        identity = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.sn2(out)))
        return out + identity


class PreActBottleneck(nn.Module):
    """The v2 (pre-activation) bottleneck of the SN model zoo."""
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: Optional[nn.Module], norm, ce=None):
        super().__init__()
        self.sn1 = norm(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.sn2 = norm(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.sn3 = norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_norm(self) -> nn.Module:
        return self.sn3

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.sn1(x))
        identity = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.sn2(out)))
        out = self.conv3(self.relu(self.sn3(out)))
        return out + identity


_BLOCKS = {(1, "basic"): BasicBlock, (1, "bottleneck"): Bottleneck,
           (2, "basic"): PreActBasicBlock, (2, "bottleneck"): PreActBottleneck}


class ResNet(nn.Module):
    """ResNet-18/34/50/101 for ``(N, 3, H, W)`` images with any normalization.

    Args:
        depth: 18, 34, 50 or 101.
        norm: a name in :data:`NORMS` (``"BN"``, ``"GN"``, ``"SN"``, ``"SSN"``,
            ``"SyncSN"``, ``"SyncSSN"``, ``"SyncBN"``) or ``channels -> module``.
        norm_kwargs: passed to every norm layer (e.g. ``using_bn=False``).
        version: 1 (the usual post-activation ResNet, stride in the 3x3
            convolution) or 2 (the SN zoo's pre-activation ResNet: norm before
            each convolution, a bare 1x1 convolution as downsample, and a final
            ``sn_out``).
        ceil_mode_pool: the SSN release's stem max-pool (padding 0,
            ``ceil_mode=True``); the SN release uses padding 1.
        ce: Channel Equilibrium after the stem norm (``ce1``, groups of 64
            channels) and after the last norm of every block in stages 1–3
            (``layerK.i.ce``, groups of 16), as in the CE paper and its
            published CE-ResNet-50; v1 only.
        ce_group_sizes: ``(stem, blocks)`` channels per CE decorrelation group.
        ce_kwargs: passed to every :class:`ChannelEquilibrium` (a ``group_size``
            there overrides ``ce_group_sizes``).
        last_gamma: initialise γ of each block's last norm to zero.
        num_classes: classifier outputs; 0 leaves out pooling and ``fc``
            (a backbone).

    ``forward`` returns logits (or the last stage's features when
    ``num_classes == 0``); :meth:`stages` returns every stage's output.
    """

    def __init__(self, depth: int = 50, norm: NormSpec = "SN", norm_kwargs: Optional[dict] = None,
                 version: int = 1, ceil_mode_pool: bool = False, ce: bool = False,
                 ce_group_sizes: Sequence[int] = (CE_STEM_GROUP_SIZE, CE_BLOCK_GROUP_SIZE),
                 ce_kwargs: Optional[dict] = None, last_gamma: bool = False, num_classes: int = 1000) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
        if version not in (1, 2):
            raise ValueError(f"ResNet version must be 1 or 2, got {version}")
        if ce and version != 1:
            raise ValueError("Channel Equilibrium is placed in the v1 ResNet only (as in the CE paper)")
        kind, blocks = DEPTHS[depth]
        block = _BLOCKS[(version, kind)]
        make_norm = norm_factory(norm, **(norm_kwargs or {}))
        stem_group, block_group = ce_group_sizes
        make_ce = ((lambda c, g=block_group: ChannelEquilibrium(c, **{"group_size": g, **(ce_kwargs or {})}))
                   if ce else None)
        self.depth, self.version = depth, version
        self._norm_name = norm if isinstance(norm, str) else None
        self._ce_group_sizes = (stem_group, block_group)

        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.sn1 = make_norm(64)
        if ce:
            self.ce1 = make_ce(64, stem_group)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (nn.MaxPool2d(3, 2, 0, ceil_mode=True) if ceil_mode_pool else nn.MaxPool2d(3, 2, 1))
        inplanes = 64
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes * block.expansion:
                conv = nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False)
                downsample = conv if version == 2 else nn.Sequential(conv, make_norm(planes * block.expansion))
            stage_ce = make_ce if i + 1 in CE_STAGES else None
            layers = [block(inplanes, planes, stride, downsample, make_norm, stage_ce)]
            inplanes = planes * block.expansion
            layers += [block(inplanes, planes, 1, None, make_norm, stage_ce) for _ in range(1, count)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        if version == 2:
            self.sn_out = make_norm(inplanes)
        self.num_features = inplanes
        if num_classes:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(0.5) if version == 2 else nn.Identity()
            self.fc = nn.Linear(inplanes, num_classes)
        self._init_weights(last_gamma)

    @classmethod
    def from_architecture(cls, arch: dict, **overrides) -> "ResNet":
        """The network an :meth:`architecture` dict describes (as converted files store it), plus ``overrides``."""
        arch = {**arch, **overrides}
        norm_kwargs = {"candidates": tuple(arch["candidates"])} if arch["norm"] in NORM_TYPES else {}
        return cls(arch["depth"], arch["norm"], norm_kwargs=norm_kwargs, version=arch["version"],
                   ceil_mode_pool=arch["ceil_mode_pool"], ce=arch["ce"],
                   ce_group_sizes=tuple(arch.get("ce_group_sizes", (CE_STEM_GROUP_SIZE, CE_BLOCK_GROUP_SIZE))),
                   num_classes=arch["num_classes"])

    def architecture(self) -> dict:
        """What rebuilds this network with :meth:`from_architecture` (a named norm only), as converted files
        store it: depth, version, norm, candidates, sparse, ce, num_classes, ceil_mode_pool, ce_group_sizes."""
        if self._norm_name is None:
            raise ValueError("a ResNet built with a norm factory has no architecture to record; build it with a "
                             f"norm name ({sorted(NORMS)})")
        return {"depth": self.depth, "version": self.version, "norm": self._norm_name,
                "candidates": list(getattr(self.sn1, "candidates", ())),
                "sparse": isinstance(self.sn1, NORM_TYPES["SSN"][0]), "ce": hasattr(self, "ce1"),
                "num_classes": self.fc.out_features if hasattr(self, "fc") else 0,
                "ceil_mode_pool": self.maxpool.ceil_mode, "ce_group_sizes": list(self._ce_group_sizes)}

    def _init_weights(self, last_gamma: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if last_gamma:
            for m in self.modules():
                if hasattr(m, "last_norm") and getattr(m.last_norm(), "weight", None) is not None:
                    nn.init.zeros_(m.last_norm().weight)

    def stages(self, x: Tensor) -> Dict[str, Tensor]:
        """Outputs of the stem and of stages 1–4 (``stem``, ``res2`` … ``res5``, detectron2's names)."""
        x = self.sn1(self.conv1(x))
        if hasattr(self, "ce1"):
            x = self.ce1(x)
        x = self.maxpool(self.relu(x))
        out = {"stem": x}
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            out[f"res{i + 1}"] = x
        if self.version == 2:
            out["res5"] = self.relu(self.sn_out(x))
        return out

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(x)["res5"]
        if not hasattr(self, "fc"):
            return x
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def resnet(depth: int = 50, norm: NormSpec = "SN", **kwargs) -> ResNet:
    """Shorthand for :class:`ResNet`."""
    return ResNet(depth, norm, **kwargs)
