"""The SN detection release's trained detectors (Detectron.pytorch files) renamed for detectron2.

switchablenorms/SwitchNorm_Detection published Faster and Mask R-CNN models
trained with Detectron.pytorch, saved as ``torch.save({"step", "train_size",
"batch_size", "model": state_dict, "optimizer"})``. Its module names
(``lib/modeling/``): ``Conv_Body`` (the ResNet, under ``Conv_Body.conv_body``
with FPN), ``RPN``, ``Box_Head``, ``Box_Outs``, ``Mask_Head``, ``Mask_Outs``;
its ``SwitchNorm`` stores ``(1, C, 1, 1)`` affine parameters, ``(1, C, 1)``
running statistics (when BN is a candidate) and 3 ([IN, LN, BN]) or 2
([IN, LN]) ratio logits.

:func:`to_detectron2` maps them onto detectron2's ``GeneralizedRCNN``
(``ResNet`` + ``FPN`` + ``StandardROIHeads``, or ``Res5ROIHeads`` for C4) and
changes what the two frameworks lay out differently:

- detectron2 puts the background class last in ``cls_score`` and has no
  background rows in ``bbox_pred`` or in the mask predictor;
- Detectron orders the anchors of a location aspect-ratio-major, detectron2
  size-major: with several sizes per level (C4) the RPN outputs are permuted;
- every switchable norm becomes our layer's canonical entries with the
  authors' math switched on (``official_compat_flag``), as for the ImageNet files.

The architecture (``body``, ``box_head``, ``mask_head``, the RPN's anchor
``sizes`` and ``aspect_ratios``) comes from the catalogue entry. Pure key
mapping: no framework is imported here.
"""
import re
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor

from .checkpoints import ConversionError, canonical_switch_norm, unwrap_state_dict

__all__ = ["LAYOUT", "to_detectron2", "anchor_order"]

#: the catalogue's ``architecture.layout`` of these files
LAYOUT = "detectron.pytorch"

_BODIES = ("FPN", "C4")
_BOX_HEADS = ("2mlp", "4conv1fc", "res5")


def _resnet_rules(src: str, dst: str) -> List[Tuple[str, object]]:
    """Detectron.pytorch ResNet names under ``src`` -> detectron2 ``ResNet`` / ``res5`` names under ``dst``."""
    s, d = re.escape(src), dst
    return [
        (rf"^{s}res1\.conv1\.weight$", f"{d}stem.conv1.weight"),
        (rf"^{s}res1\.sn1\.(.+)$", rf"{d}stem.conv1.norm.\1"),
        (rf"^{s}(res\d\.\d+)\.conv(\d)\.weight$", rf"{d}\1.conv\2.weight"),
        (rf"^{s}(res\d\.\d+)\.sn(\d)\.(.+)$", rf"{d}\1.conv\2.norm.\3"),
        (rf"^{s}(res\d\.\d+)\.downsample\.0\.weight$", rf"{d}\1.shortcut.weight"),
        (rf"^{s}(res\d\.\d+)\.downsample\.1\.(.+)$", rf"{d}\1.shortcut.norm.\2"),
    ]


def _conv_norm(src: str, dst: str) -> List[Tuple[str, object]]:
    """``Sequential(conv, norm)`` (``src.0``, ``src.1``) or a biased conv (``src``) -> detectron2's ``Conv2d``."""
    s = re.escape(src)
    return [(rf"^{s}\.0\.weight$", f"{dst}.weight"), (rf"^{s}\.1\.(.+)$", rf"{dst}.norm.\1"),
            (rf"^{s}\.(weight|bias)$", rf"{dst}.\1")]


def _fpn_rules() -> List[Tuple[str, object]]:
    """``conv_top`` is res5's lateral; ``topdown_lateral_modules.i`` res(4-i)'s; ``posthoc_modules.i`` P(5-i)'s."""
    rules = _conv_norm("Conv_Body.conv_top", "backbone.fpn_lateral5")
    for i in range(3):
        rules += _conv_norm(f"Conv_Body.topdown_lateral_modules.{i}.conv_lateral", f"backbone.fpn_lateral{4 - i}")
    for i in range(4):
        rules += _conv_norm(f"Conv_Body.posthoc_modules.{i}", f"backbone.fpn_output{5 - i}")
    return rules


def _head_rules(arch: dict) -> List[Tuple[str, object]]:
    rpn = "FPN_RPN_" if arch["body"] == "FPN" else "RPN_"
    rules = [(rf"^RPN\.{rpn}conv\.(.+)$", r"proposal_generator.rpn_head.conv.\1"),
             (rf"^RPN\.{rpn}cls_score\.(.+)$", r"proposal_generator.rpn_head.objectness_logits.\1"),
             (rf"^RPN\.{rpn}bbox_pred\.(.+)$", r"proposal_generator.rpn_head.anchor_deltas.\1")]
    box = arch["box_head"]
    if box == "2mlp":
        rules += [(r"^Box_Head\.fc([12])\.(.+)$", r"roi_heads.box_head.fc\1.\2")]
    elif box == "4conv1fc":  # Sequential(conv, SN, ReLU) x 4, then fc
        rules += [(r"^Box_Head\.convs\.(\d+)\.(.+)$", lambda m: _in_triplet("roi_heads.box_head.conv", m)),
                  (r"^Box_Head\.fc\.(.+)$", r"roi_heads.box_head.fc1.\1")]
    else:  # res5 on the pooled RoIs (C4)
        rules += _resnet_rules("Box_Head.", "roi_heads.")
    rules += [(r"^Box_Outs\.(cls_score|bbox_pred)\.(.+)$", r"roi_heads.box_predictor.\1.\2")]
    if arch.get("mask_head"):
        rules += [(r"^Mask_Head\.conv_fcn\.(\d+)\.(.+)$", lambda m: _in_triplet("roi_heads.mask_head.mask_fcn", m)),
                  (r"^Mask_Head\.upconv\.(.+)$", r"roi_heads.mask_head.deconv.\1"),
                  (r"^Mask_Outs\.classify\.(.+)$", r"roi_heads.mask_head.predictor.\1")]
    return rules


def _in_triplet(dst: str, m) -> str:
    """``Sequential(conv, norm, ReLU)`` repeated: entry ``3i`` is conv ``i+1``, entry ``3i+1`` its norm."""
    index, rest = int(m.group(1)), m.group(2)
    layer, kind = divmod(index, 3)
    if kind == 0:
        return f"{dst}{layer + 1}.{rest}"
    if kind == 1:
        return f"{dst}{layer + 1}.norm.{rest}"
    raise ConversionError(f"entry {index} of a conv-norm-ReLU head holds parameters ({rest})")


def anchor_order(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> List[int]:
    """For each detectron2 anchor index (size-major), the Detectron index of the same anchor (ratio-major)."""
    n_sizes = len(sizes)
    return [r * n_sizes + s for s in range(n_sizes) for r in range(len(aspect_ratios))]


def _permute_anchors(value: Tensor, order: List[int], per_anchor: int) -> Tensor:
    shape = value.shape
    grouped = value.reshape(len(order), per_anchor, *shape[1:])
    return grouped[order].reshape(shape)


def _check_architecture(arch: dict) -> None:
    if arch.get("layout") != LAYOUT:
        raise ConversionError(f"not a {LAYOUT} architecture: {arch}")
    if arch.get("body") not in _BODIES or arch.get("box_head") not in _BOX_HEADS:
        raise ConversionError(f"body must be one of {_BODIES} and box_head one of {_BOX_HEADS}, got {arch}")
    if (arch["body"] == "C4") != (arch["box_head"] == "res5"):
        raise ConversionError("the C4 body goes with the res5 box head, and only it")


def to_detectron2(source, arch: dict) -> Tuple[dict, List[str]]:
    """A Detectron.pytorch detector (the loaded file or its state dict) in detectron2's names.

    Args:
        source: what ``torch.load`` returned for a release file.
        arch: the catalogue entry's ``architecture`` (``body``, ``box_head``,
            ``mask_head``, ``num_classes`` with background, ``rpn_sizes``,
            ``rpn_aspect_ratios``).

    Returns ``({"model": state_dict, "__author__": "ssn_plugins", ...}, report)``:
    the layout ``DetectionCheckpointer`` loads as it is (no matching
    heuristics: every name is detectron2's).

    Raises:
        ConversionError: a key without a rule, a detectron2 key written twice,
            a head or class count that does not fit ``arch``.
    """
    _check_architecture(arch)
    sd = unwrap_state_dict(source)
    backbone = "Conv_Body.conv_body." if arch["body"] == "FPN" else "Conv_Body."
    rules = _resnet_rules(backbone, "backbone.bottom_up." if arch["body"] == "FPN" else "backbone.")
    if arch["body"] == "FPN":
        rules += _fpn_rules()
    rules += _head_rules(arch)

    renamed: Dict[str, Tensor] = {}
    for key, value in sd.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                break
        else:
            raise ConversionError(f"no rule for key {key!r} (body {arch['body']}, box head {arch['box_head']}, "
                                  f"mask head {arch.get('mask_head')})")
        if new in renamed:
            raise ConversionError(f"{key!r} and another key both become {new!r}")
        renamed[new] = value

    _check_complete(renamed, arch)
    out = _canonical_norms(renamed)
    classes = arch["num_classes"]  # with the background, as Detectron counts
    cls_w = out.get("roi_heads.box_predictor.cls_score.weight")
    if cls_w is None or cls_w.shape[0] != classes:
        raise ConversionError(f"Box_Outs.cls_score should have {classes} rows (classes with the background), "
                              f"got {None if cls_w is None else tuple(cls_w.shape)}")
    for name in ("weight", "bias"):
        key = f"roi_heads.box_predictor.cls_score.{name}"
        out[key] = torch.cat([out[key][1:], out[key][:1]])  # background: first in Detectron, last in detectron2
        key = f"roi_heads.box_predictor.bbox_pred.{name}"
        if out[key].shape[0] != 4 * classes:
            raise ConversionError(f"Box_Outs.bbox_pred should have {4 * classes} rows (class-specific boxes), got "
                                  f"{out[key].shape[0]}")
        out[key] = out[key][4:]  # no background box in detectron2
        key = f"roi_heads.mask_head.predictor.{name}"
        if key in out:
            if out[key].shape[0] != classes:
                raise ConversionError(f"Mask_Outs.classify should have {classes} channels, got {out[key].shape[0]}")
            out[key] = out[key][1:]
    order = anchor_order(arch["rpn_sizes"], arch["rpn_aspect_ratios"])
    for name, per_anchor in (("objectness_logits", 1), ("anchor_deltas", 4)):
        for part in ("weight", "bias"):
            key = f"proposal_generator.rpn_head.{name}.{part}"
            if out[key].shape[0] != len(order) * per_anchor:
                raise ConversionError(f"{key}: {out[key].shape[0]} outputs for {len(order)} anchors per location")
            out[key] = _permute_anchors(out[key], order, per_anchor)

    norms = sum(1 for k in out if k.endswith(".norm.mean_weight"))
    report = [f"{arch['body']} {'Mask' if arch.get('mask_head') else 'Faster'} R-CNN, box head {arch['box_head']}, "
              f"{norms} switchable norms, {classes - 1} classes"]
    return {"model": out, "__author__": "ssn_plugins", "ssn_plugins": {"source_layout": LAYOUT, **arch}}, report


def _check_complete(renamed: Dict[str, Tensor], arch: dict) -> None:
    """Every part ``arch`` describes is in the file (a Faster R-CNN file named as a Mask R-CNN is refused)."""
    parts = {"backbone": "backbone.", "RPN": "proposal_generator.rpn_head.", "box head": "roi_heads.box_head."
             if arch["box_head"] != "res5" else "roi_heads.res5.", "box predictor": "roi_heads.box_predictor."}
    if arch.get("mask_head"):
        parts["mask head"] = "roi_heads.mask_head."
    missing = [part for part, prefix in parts.items() if not any(k.startswith(prefix) for k in renamed)]
    if arch["body"] == "FPN" and not any(k.startswith("backbone.fpn_") for k in renamed):
        missing.append("FPN")
    if missing:
        raise ConversionError(f"the file has no {', '.join(missing)} for the {arch['body']} "
                              f"{'Mask' if arch.get('mask_head') else 'Faster'} R-CNN it is catalogued as")


def _canonical_norms(renamed: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Every ``*.norm.*`` group rewritten as our layer's canonical state; other entries as they are."""
    groups: Dict[str, Dict[str, Tensor]] = {}
    out: Dict[str, Tensor] = {}
    for key, value in renamed.items():
        prefix, dot, name = key.rpartition(".")
        if prefix.endswith(".norm"):
            groups.setdefault(prefix, {})[name] = value
        else:
            out[key] = value
    for prefix, entries in groups.items():
        for name, value in canonical_switch_norm(prefix, entries).items():
            out[f"{prefix}.{name}"] = value
    return out
