"""Pretrained ResNets by catalogue name or converted file: the one place a :class:`~ssn_plugins.models.ResNet` is
made from stored weights. It sits above both the model file and the converters (as timm's builder sits above its
model files), so the arrows run one way: this module -> model zoo -> checkpoints -> models.
"""
from pathlib import Path
from typing import Optional, Union

import torch

from . import model_zoo
from .checkpoint_io import ConversionError, load_checkpoint_file
from .models.resnet import ResNet

__all__ = ["from_pretrained", "load_converted"]


def from_pretrained(name: str, backbone_only: bool = False, progress: bool = True) -> ResNet:
    """A published ImageNet model by catalogue name (``"resnet50_ssn_8x32"``, ``"ssn://resnet50_ssn_8x32"``).

    Downloaded, checked and converted on first use, then read from the
    cache (:mod:`ssn_plugins.model_zoo`); returned in eval mode, with the
    authors' math (``official_compat``) in every SN/SSN layer.
    ``backbone_only`` leaves out pooling and ``fc`` (``num_classes=0``).
    """
    url = name if name.startswith(model_zoo.SCHEME) else model_zoo.SCHEME + name
    if model_zoo.parse_url(url, "torch")[1] != "torch":
        raise ValueError(f"from_pretrained({name!r}): this reads the 'torch' layout (a ResNet); the others are for "
                         f"their frameworks (MODEL.WEIGHTS, init_cfg)")
    path = model_zoo.local_path(url, default_layout="torch", progress=progress)
    return load_converted(torch.load(path, weights_only=True), backbone_only=backbone_only, source=url)


def load_converted(saved: Union[dict, str, Path], backbone_only: bool = False,
                   source: Optional[str] = None) -> ResNet:
    """The :class:`ResNet` of a ``--to torch`` file (``{"state_dict", "meta": {"ssn_plugins": architecture}}``,
    as ``ssn-convert-checkpoint`` and the model zoo write it), loaded weights-only from a path or given loaded;
    in eval mode. Anything else raises :class:`~ssn_plugins.checkpoints.ConversionError` naming ``source``.
    """
    if not isinstance(saved, dict):
        source = source or str(saved)
        saved = load_checkpoint_file(saved)
    source = source or "the checkpoint"
    meta = saved.get("meta")
    arch = meta.get("ssn_plugins") if isinstance(meta, dict) else None
    state = saved.get("state_dict")
    if not isinstance(arch, dict) or not isinstance(state, dict):
        raise ConversionError(f"{source}: meta['ssn_plugins'] holds a {type(arch).__name__} and state_dict a "
                              f"{type(state).__name__}, not what ssn-convert-checkpoint --to torch writes "
                              f"(a damaged file, or another layout?)")
    if backbone_only:
        arch = {**arch, "num_classes": 0}
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    elif "fc.weight" not in state:
        raise ConversionError(f"{source}: a backbone without the classifier (tools/convert_checkpoint.py's _mm.pth / "
                              f"_i3d.pth files, for OpenMMLab); evaluate the release file or its --to torch file")
    try:
        model = ResNet.from_architecture(arch)
    except (KeyError, TypeError, ValueError) as e:
        raise ConversionError(f"{source}: meta['ssn_plugins'] does not describe a network ({type(e).__name__}: "
                              f"{e})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ConversionError(f"{source}: its weights do not fit the network its meta describes ({first})") from None
    return model.eval()
