"""The SN segmentation release's trained ADE20K model (CSAIL framework files) renamed for mmseg.

switchablenorms/SwitchNorm_Segmentation trained ``resnet50_dilated8`` +
``c1_bilinear_deepsup`` in the CSAIL scene-parsing framework and saved the two
halves separately (``torch.save(net.state_dict())``): the encoder, a ResNet-50
v1 with the SN release's own names (``conv1``, ``sn1``, ``layerK.i.snN``,
``downsample``; the 7x7 stem) whose stages 3 and 4 are dilated (2 and 4, the
first block of each at half the rate); and the decoder ``C1BilinearDeepSup``:
``cbr`` (3x3 conv without bias, SN, ReLU) and ``conv_last`` (1x1) on stage 4,
``cbr_deepsup`` and ``conv_last_deepsup`` on stage 3 (deep supervision).

:func:`to_openmmlab` maps them onto mmseg's ``EncoderDecoder``: ``backbone``
(``ResNet``, ``dilations=(1, 1, 2, 4)``, ``contract_dilation=True``),
``decode_head`` and ``auxiliary_head`` (``FCNHead`` with one 3x3 conv of 512
channels, ``concat_input=False``). The encoder goes through
:func:`ssn_plugins.checkpoints.read_published`, as the ImageNet files do; every
SN layer keeps the authors' math (``official_compat_flag``). Pure key mapping:
no framework is imported here.
"""
import re
from typing import Dict, List, Tuple

from torch import Tensor

from .checkpoints import ConversionError, canonical_switch_norm, read_published, to_openmmlab as backbone_to_openmmlab
from .checkpoints import unwrap_state_dict

__all__ = ["LAYOUT", "to_openmmlab"]

#: the catalogue's ``architecture.layout`` of these files
LAYOUT = "csail-segmentation"

#: decoder module -> (mmseg head, its part)
_DECODER = {"cbr": ("decode_head", "convs.0"), "conv_last": ("decode_head", "conv_seg"),
            "cbr_deepsup": ("auxiliary_head", "convs.0"), "conv_last_deepsup": ("auxiliary_head", "conv_seg")}


def _decoder_to_openmmlab(sd: Dict[str, Tensor], num_classes: int) -> Dict[str, Tensor]:
    out: Dict[str, Tensor] = {}
    norms: Dict[str, Dict[str, Tensor]] = {}
    for key, value in sd.items():
        m = re.match(r"^(cbr|cbr_deepsup)\.([01])\.(.+)$", key) or re.match(r"^(conv_last|conv_last_deepsup)\.()(.+)$",
                                                                             key)
        if m is None:
            raise ConversionError(f"decoder: no rule for key {key!r} (expected a c1_bilinear_deepsup decoder: cbr, "
                                  f"conv_last, cbr_deepsup, conv_last_deepsup)")
        module, index, name = m.groups()
        head, part = _DECODER[module]
        if index == "1":  # the SN of a conv-SN-ReLU block
            norms.setdefault(f"{head}.{part}.bn", {})[name] = value
        elif index == "0":
            if name != "weight":
                raise ConversionError(f"decoder: {key!r}: the release's 3x3 convs have no bias")
            out[f"{head}.{part}.conv.weight"] = value
        else:
            out[f"{head}.{part}.{name}"] = value
    for prefix, entries in norms.items():
        out.update({f"{prefix}.{k}": v for k, v in canonical_switch_norm(prefix, entries).items()})
    for head in ("decode_head", "auxiliary_head"):
        for key in (f"{head}.convs.0.conv.weight", f"{head}.conv_seg.weight", f"{head}.convs.0.bn.mean_weight"):
            if key not in out:
                raise ConversionError(f"decoder: nothing for {key} (not a c1_bilinear_deepsup decoder with SN)")
        if out[f"{head}.conv_seg.weight"].shape[0] != num_classes:
            raise ConversionError(f"decoder: {head}'s classifier has {out[f'{head}.conv_seg.weight'].shape[0]} "
                                  f"classes, the catalogue says {num_classes}")
    return out


def to_openmmlab(encoder, decoder, arch: dict) -> Tuple[dict, List[str]]:
    """The release's encoder and decoder (what ``torch.load`` returned for each) as one mmseg state dict.

    Returns ``({"state_dict": ..., "meta": ...}, report)``, the layout mmengine's
    ``load_checkpoint`` (``load_from``) reads.

    Raises:
        ConversionError: an encoder that is not an SN ResNet of the catalogued depth, a decoder key without a
            rule, a class count that is not the catalogue's.
    """
    if arch.get("layout") != LAYOUT:
        raise ConversionError(f"not a {LAYOUT} architecture: {arch}")
    try:
        published = read_published(unwrap_state_dict(encoder))
    except ConversionError as e:
        raise ConversionError(f"encoder: {e}") from e
    if (published.depth, published.norm, list(published.candidates)) != (
            arch["depth"], arch["norm"], list(arch["candidates"])):
        raise ConversionError(f"encoder: an {published.norm} ResNet-{published.depth} over "
                              f"{list(published.candidates)}, the catalogue says {arch['norm']} ResNet-{arch['depth']} "
                              f"over {arch['candidates']}")
    backbone, _ = backbone_to_openmmlab(published)
    state = {f"backbone.{k}": v for k, v in backbone["state_dict"].items()}
    state.update(_decoder_to_openmmlab(unwrap_state_dict(decoder), arch["num_classes"]))
    report = published.report + [f"c1_bilinear_deepsup decoder, {arch['num_classes']} classes"]
    return {"state_dict": state, "meta": {"ssn_plugins": {"source_layout": LAYOUT, **arch}}}, report
