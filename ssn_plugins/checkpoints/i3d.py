"""I3D inflation: 2-D ResNet kernels repeated over time for mmaction2's ``ResNet3d`` (ours, and other OpenMMLab
2-D baselines whose norm mmaction2's own inflation cannot load)."""
import re
from typing import Dict, List, Tuple

from torch import Tensor

from ..checkpoint_io import ConversionError
from ..models.resnet import DEPTHS
from .published import PublishedModel, _block_layout, _check_v1

__all__ = ["to_i3d", "inflate_openmmlab_resnet", "I3D_R50_INFLATE"]


#: mmaction2's I3D ResNet-50 inflation pattern (configs/_base_/models/i3d_r50.py).
I3D_R50_INFLATE = ((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0))


def _inflate(weight: Tensor, t: int) -> Tensor:
    """A 2-D kernel repeated ``t`` times along time and divided by ``t`` (I3D's inflation)."""
    return weight.unsqueeze(2).repeat(1, 1, t, 1, 1) / t


def to_i3d(model: PublishedModel, conv1_t: int = 5, inflate=None,
           inflate_style: str = "3x1x1") -> Tuple[dict, List[str]]:
    """mmaction2 ``ResNet3d`` names with inflated kernels (I3D).

    The stem convolution gets ``conv1_t`` frames; in each block whose
    ``inflate`` flag is 1, ``conv1`` (``'3x1x1'`` style) or ``conv2``
    (``'3x3x3'``) gets 3; everything else one. Each inflated kernel is the 2-D
    kernel repeated over time and divided by the frame count, so a video of
    identical frames gives the 2-D response away from the temporal borders.
    Norm parameters, ratios, statistics and selections are copied unchanged
    (the 3-D layers hold the same tensors). ``inflate`` defaults to
    :data:`I3D_R50_INFLATE` for ResNet-50 and to every block otherwise.
    Returns ``({"state_dict": ..., "meta": ...}, dropped keys)``.
    """
    _check_v1(model, "I3D")
    out, dropped, inflation = _inflate_resnet(model.state_dict, model.depth, "sn", "bn", conv1_t, inflate,
                                              inflate_style)
    return {"state_dict": out, "meta": {"ssn_plugins": {**model.architecture(), **inflation}}}, dropped


def inflate_openmmlab_resnet(state_dict: Dict[str, Tensor], depth: int = 50, norm: str = "bn", conv1_t: int = 5,
                             inflate=None, inflate_style: str = "3x1x1") -> Tuple[dict, List[str]]:
    """A 2-D OpenMMLab ResNet checkpoint (``conv1``, ``{norm}1``, ``layerK.i.{norm}N``) inflated like :func:`to_i3d`.

    For baselines whose norm mmaction2's own 2-D inflation cannot load: it
    looks for ``ConvModule.bn``, while a GN layer is ``ConvModule.gn``. The
    norm attribute keeps its name (``norm='gn'`` gives ``conv1.gn.weight``).
    From a whole model's checkpoint (keys ``backbone.*``) the backbone is taken.
    Returns ``({"state_dict": ..., "meta": ...}, dropped keys)``; load it with
    ``pretrained=<file>, pretrained2d=False``.
    """
    if depth not in DEPTHS:
        raise ConversionError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
    if not re.fullmatch(r"[a-z]+", norm):
        raise ConversionError(f"norm must be the layers' attribute name such as 'bn' or 'gn', got {norm!r}")
    outside = []
    if any(k.startswith("backbone.") for k in state_dict):  # a whole model: keep its backbone
        plain = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
        outside = [k for k in state_dict if not k.startswith("backbone.")]
    else:
        plain = dict(state_dict)
    if f"{norm}1.weight" not in plain:
        found = sorted({m.group(1) for k in plain if (m := re.match(r"^([a-z]+)1\.weight$", k))} - {"conv"})
        raise ConversionError(f"no stem norm '{norm}1.weight' in the checkpoint (stem norms found: {found})")
    found = _block_layout(plain)
    if found != DEPTHS[depth]:
        raise ConversionError(f"--depth {depth} expects {DEPTHS[depth][0]} blocks per stage {DEPTHS[depth][1]}, but "
                              f"the checkpoint has {found[0]} blocks per stage {found[1]}")
    out, dropped, inflation = _inflate_resnet(plain, depth, norm, norm, conv1_t, inflate, inflate_style)
    return {"state_dict": out, "meta": {"ssn_plugins": {"depth": depth, "norm": norm, **inflation}}}, outside + dropped


def _inflate_resnet(state_dict: Dict[str, Tensor], depth: int, norm_in: str, norm_out: str, conv1_t: int,
                    inflate, inflate_style: str) -> Tuple[Dict[str, Tensor], List[str], dict]:
    """The I3D renaming and kernel inflation shared by :func:`to_i3d` and :func:`inflate_openmmlab_resnet`.

    Returns the inflated state dict, the dropped keys and the inflation settings for the file's metadata.
    """
    if not (isinstance(conv1_t, int) and conv1_t >= 1):
        raise ConversionError(f"conv1_t (frames of the inflated stem convolution, --i3d-conv1-t) must be >= 1 "
                              f"(an int), got {conv1_t!r}")
    if inflate_style not in ("3x1x1", "3x3x3"):
        raise ConversionError(f"inflate_style must be '3x1x1' or '3x3x3', got {inflate_style!r}")
    blocks = DEPTHS[depth][1]
    if inflate is None:
        inflate = I3D_R50_INFLATE if depth == 50 else tuple((1,) * n for n in blocks)
    if tuple(len(s) for s in inflate) != blocks:
        raise ConversionError(f"inflate pattern {inflate} does not match ResNet-{depth}'s blocks {blocks}")
    inflated_conv = "conv1" if inflate_style == "3x1x1" else "conv2"
    out, dropped = {}, []
    for key, value in state_dict.items():
        if key.startswith("fc."):
            dropped.append(key)
        elif key == "conv1.weight":
            out["conv1.conv.weight"] = _inflate(value, conv1_t)
        elif key.startswith(f"{norm_in}1."):
            out[f"conv1.{norm_out}." + key[len(norm_in) + 2:]] = value
        elif re.match(r"^(ce1|layer\d\.\d+\.ce)\.", key):  # CE works on 5-D input as it is: copied unchanged
            out[key] = value
        elif m := re.match(r"^layer(\d)\.(\d+)\.(conv\d)\.weight$", key):
            stage, block, conv = int(m.group(1)), int(m.group(2)), m.group(3)
            t = 3 if inflate[stage - 1][block] and conv == inflated_conv else 1
            out[f"layer{stage}.{block}.{conv}.conv.weight"] = _inflate(value, t)
        elif m := re.match(rf"^(layer\d\.\d+)\.{norm_in}(\d)\.(.+)$", key):
            out[f"{m.group(1)}.conv{m.group(2)}.{norm_out}.{m.group(3)}"] = value
        elif m := re.match(r"^(layer\d\.\d+)\.downsample\.0\.weight$", key):
            out[f"{m.group(1)}.downsample.conv.weight"] = value.unsqueeze(2)
        elif m := re.match(r"^(layer\d\.\d+)\.downsample\.1\.(.+)$", key):
            out[f"{m.group(1)}.downsample.{norm_out}.{m.group(2)}"] = value
        else:
            raise ConversionError(f"no rule for key {key!r}")
    return out, dropped, {"conv1_t": conv1_t, "inflate": [list(s) for s in inflate], "inflate_style": inflate_style}
