"""A canonical :class:`~.published.PublishedModel` renamed for each framework: detectron2's ``ResNet``, OpenMMLab's
``ResNet`` and (through :mod:`.i3d`) mmaction2's ``ResNet3d``; :func:`to_layout` dispatches on the target name. Pure
key mapping: no framework is imported here.
"""
import re
from typing import Dict, List, Tuple

from torch import Tensor

from ..checkpoint_io import ConversionError
from ..models.resnet import DEPTHS
from .i3d import to_i3d
from .published import PublishedModel, _check_v1

__all__ = ["to_detectron2", "to_openmmlab", "to_layout", "TARGETS"]


def _rename(sd: Dict[str, Tensor], rules, skip=()) -> Tuple[Dict[str, Tensor], List[str]]:
    out, dropped = {}, []
    for key, value in sd.items():
        if any(re.match(p, key) for p in skip):
            dropped.append(key)
            continue
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise ConversionError(f"no rule for key {key!r}")
    return out, dropped


def to_detectron2(model: PublishedModel) -> Tuple[dict, List[str]]:
    """detectron2 ``ResNet`` names (``stem.conv1.norm.*``, ``res2.0.conv1.norm.*``, ``res2.0.shortcut.*``).

    Returns ``({"model": state_dict, "__author__": ..., "matching_heuristics": True}, dropped keys)``,
    the layout ``DetectionCheckpointer`` expects of a ``.pkl`` backbone file
    (its heuristics add the ``backbone.bottom_up.`` prefix). Build the
    detectron2 ResNet with ``STRIDE_IN_1X1: False`` (the stride is in the 3x3
    convolution here), and with ``MODEL.RESNETS.CE.ENABLED`` for a CE model.
    """
    _check_v1(model, "detectron2")
    def stage(m):
        return f"res{int(m.group(1)) + 1}.{m.group(2)}."
    last_conv = "conv3" if DEPTHS[model.depth][0] == "bottleneck" else "conv2"
    rules = [
        (r"^conv1\.weight$", "stem.conv1.weight"),
        (r"^sn1\.", "stem.conv1.norm."),
        (r"^ce1\.", "stem.conv1.ce."),  # CE as ssn_plugins.detectron2 adds it (MODEL.RESNETS.CE)
        (r"^layer(\d)\.(\d+)\.ce\.", lambda m: stage(m) + f"{last_conv}.ce."),
        (r"^layer(\d)\.(\d+)\.conv(\d)\.weight$", lambda m: stage(m) + f"conv{m.group(3)}.weight"),
        (r"^layer(\d)\.(\d+)\.sn(\d)\.", lambda m: stage(m) + f"conv{m.group(3)}.norm."),
        (r"^layer(\d)\.(\d+)\.downsample\.0\.weight$", lambda m: stage(m) + "shortcut.weight"),
        (r"^layer(\d)\.(\d+)\.downsample\.1\.", lambda m: stage(m) + "shortcut.norm."),
    ]
    sd, dropped = _rename(model.state_dict, rules, skip=(r"^fc\.",))
    return {"model": sd, "__author__": "ssn_plugins", "matching_heuristics": True,
            "ssn_plugins": model.architecture()}, dropped


def to_openmmlab(model: PublishedModel) -> Tuple[dict, List[str]]:
    """OpenMMLab ``ResNet`` (mmdet/mmseg, ``style='pytorch'``) names: ``bn1``, ``layerK.i.bn{1,2,3}``.

    Returns ``({"state_dict": ..., "meta": ...}, dropped keys)``; load it
    with ``init_cfg=dict(type='Pretrained', checkpoint=...)`` on a ResNet
    whose ``norm_cfg`` type is ``SN``/``SSN`` (names kept as ``bn`` by the
    plugin's registration); a CE model on ``type='ResNetCE'`` (CE as
    ``ce1`` and ``layerK.i.ce``, the CE release's names).
    """
    _check_v1(model, "OpenMMLab")
    rules = [
        (r"^conv1\.weight$", "conv1.weight"),
        (r"^sn1\.", "bn1."),
        (r"^(ce1|layer\d\.\d+\.ce)\.", r"\1."),
        (r"^(layer\d\.\d+)\.conv(\d)\.weight$", r"\1.conv\2.weight"),
        (r"^(layer\d\.\d+)\.sn(\d)\.", r"\1.bn\2."),
        (r"^(layer\d\.\d+\.downsample\.[01])\.", r"\1."),
    ]
    sd, dropped = _rename(model.state_dict, rules, skip=(r"^fc\.",))
    return {"state_dict": sd, "meta": {"ssn_plugins": model.architecture()}}, dropped


#: conversion targets -> file suffix (detectron2's ``.pkl`` is pickled, the others ``torch.save``d)
TARGETS = {"torch": ".pth", "detectron2": "_d2.pkl", "openmmlab": "_mm.pth", "i3d": "_i3d.pth"}


def to_layout(model: PublishedModel, target: str, conv1_t: int = 5, inflate_style: str = "3x1x1"
            ) -> Tuple[dict, List[str]]:
    """``model`` in the layout of ``target`` (a key of :data:`TARGETS`): ``(object to save, dropped keys)``.

    The one conversion path of ``tools/convert_checkpoint.py`` and of the
    ``ssn://`` model zoo.
    """
    if target == "torch":
        return {"state_dict": model.state_dict, "meta": {"ssn_plugins": model.architecture()}}, []
    if target == "detectron2":
        return to_detectron2(model)
    if target == "openmmlab":
        return to_openmmlab(model)
    if target == "i3d":
        return to_i3d(model, conv1_t=conv1_t, inflate_style=inflate_style)
    raise ConversionError(f"unknown target {target!r}; choose from {sorted(TARGETS)}")
