"""Reading the published SN/SSN/CE ImageNet checkpoints.

A published file is a ``torch.save`` dict with ``state_dict`` (and ``epoch``,
``best_prec1``, ``optimizer``), or the state dict itself, keys often prefixed
``module.``. The CE release is a BatchNorm ResNet (``bn1``, ``layerK.i.bnN``)
with CE modules ``ce1`` and ``layerK.i.ce``; its BN layers are renamed to our
``sn`` names. :func:`read_published` unwraps it, infers the architecture and
loads it into :class:`ssn_plugins.models.ResNet`, whose norm layers accept
the authors' layout; the result is a canonical state dict (``(C,)``
parameters, ``bool`` flags) that :mod:`.layouts` renames per framework.
"""
import re
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor

from ..checkpoint_io import ConversionError, load_checkpoint_file
from ..layers.channel_equilibrium import CE_BLOCK_GROUP_SIZE, CE_STEM_GROUP_SIZE
from ..layers.switch_norm import SwitchNorm2d
from ..models.resnet import DEPTHS, ResNet

__all__ = ["PublishedModel", "read_published", "unwrap_state_dict", "canonical_switch_norm"]


@dataclass
class PublishedModel:
    """A published checkpoint, read and checked.

    ``state_dict`` is canonical (as :class:`ResNet` saves it); the other
    fields describe the architecture it was inferred to be.
    """
    depth: int
    version: int
    norm: str
    candidates: Tuple[str, ...]
    sparse: bool
    ce: bool
    num_classes: int
    ceil_mode_pool: bool
    ce_group_sizes: Tuple[int, int]
    state_dict: Dict[str, Tensor] = field(repr=False)
    report: List[str] = field(default_factory=list, repr=False)

    @classmethod
    def from_model(cls, model: ResNet, report: Sequence[str] = ()) -> "PublishedModel":
        """A trained :class:`ResNet` described as a release (the pretraining tool's exports)."""
        arch = model.architecture()
        return cls(**{**arch, "candidates": tuple(arch["candidates"]), "ce_group_sizes": tuple(arch["ce_group_sizes"])},
                   state_dict=model.state_dict(), report=list(report))

    def architecture(self) -> dict:
        """The fields that rebuild the model (saved beside converted weights; :meth:`ResNet.from_architecture`)."""
        d = asdict(self)
        d.pop("state_dict"), d.pop("report")
        d["candidates"] = list(self.candidates)
        d["ce_group_sizes"] = list(self.ce_group_sizes)
        return d


def unwrap_state_dict(obj) -> Dict[str, Tensor]:
    """The state dict in a loaded checkpoint (under ``state_dict`` or ``model``, or itself), ``module.`` removed."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ConversionError("not a state dict: expected a dict of tensors, or one under 'state_dict' / 'model'")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def _bn_to_sn_names(sd: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The CE release's BatchNorm names (``bn1``, ``layerK.i.bnN``) as ours (``sn1``, ``layerK.i.snN``)."""
    return {re.sub(r"^((?:layer\d\.\d+\.)?)bn(\d)\.", r"\1sn\2.", k): v for k, v in sd.items()}


def _ce_group_sizes(sd: Dict[str, Tensor]) -> Tuple[int, int]:
    """``(stem, blocks)`` channels per CE group, read from the ``running_wm`` shapes ``(groups, d, d)``."""
    stem = sd.get("ce1.running_wm")
    block = sd.get("layer1.0.ce.running_wm")
    if stem is None or block is None or stem.dim() != 3 or block.dim() != 3:
        raise ConversionError("a CE model needs 'ce1.running_wm' and 'layer1.0.ce.running_wm' of shape (groups, d, d)")
    return int(stem.shape[-1]), int(block.shape[-1])


def _infer(sd: Dict[str, Tensor]) -> dict:
    kind, counts = _block_layout(sd)
    depth = next((d for d, (k, c) in DEPTHS.items() if k == kind and c == counts), None)
    if depth is None:
        raise ConversionError(f"unrecognised ResNet: {kind} blocks per stage {counts}")
    ce = any(k.startswith("ce1.") for k in sd)
    ce_group_sizes = _ce_group_sizes(sd) if ce else (CE_STEM_GROUP_SIZE, CE_BLOCK_GROUP_SIZE)
    ratio = sd.get("sn1.mean_weight")
    if ratio is None and "sn1.weight" in sd and ce:  # the CE release: BatchNorm + CE (renamed by the caller)
        return {"depth": depth, "version": 1, "norm": "BN", "candidates": (), "sparse": False, "ce": True,
                "num_classes": sd["fc.weight"].shape[0] if "fc.weight" in sd else 0, "ceil_mode_pool": False,
                "ce_group_sizes": ce_group_sizes}
    if ratio is None:
        raise ConversionError("no 'sn1.mean_weight' and no CE modules: not an SN/SSN/CE ResNet checkpoint")
    if ratio.numel() not in (2, 3):
        raise ConversionError(f"ratio logits have {ratio.numel()} entries; expected 3 ([IN, LN, BN]) or 2 ([IN, LN])")
    sparse = any(k.endswith("mean_fixed") for k in sd)
    return {
        "depth": depth,
        "version": 2 if "sn_out.weight" in sd else 1,
        "norm": "SSN" if sparse else "SN",
        "candidates": ("IN", "LN", "BN") if ratio.numel() == 3 else ("IN", "LN"),
        "sparse": sparse,
        "ce": ce,
        "num_classes": sd["fc.weight"].shape[0] if "fc.weight" in sd else 0,
        # the SSN release's stem pools with padding 0 and ceil_mode; the SN release with padding 1
        "ceil_mode_pool": sparse,
        "ce_group_sizes": ce_group_sizes,
    }


def read_published(source, ceil_mode_pool=None, trust_pickle: bool = False) -> PublishedModel:
    """Read a published SN/SSN/CE ResNet checkpoint (a path or an already loaded object).

    Args:
        source: file path, or the object ``torch.load`` returned.
        ceil_mode_pool: override the inferred stem pooling (SSN release: True).
        trust_pickle: load with ``weights_only=False`` (only for files you trust;
            needed when a file pickles objects beyond tensors and containers).

    Raises:
        ConversionError: on anything unrecognised (unknown keys, shapes, architecture).
    """
    if not isinstance(source, dict):
        source = load_checkpoint_file(source, trust_pickle)
    sd = unwrap_state_dict(source)
    if "bn1.weight" in sd and "sn1.weight" not in sd:
        sd = _bn_to_sn_names(sd)
    arch = _infer(sd)
    if ceil_mode_pool is not None:
        arch["ceil_mode_pool"] = ceil_mode_pool
    model = ResNet.from_architecture(arch)
    try:
        result = model.load_state_dict(dict(sd), strict=False)
    except RuntimeError as e:  # shape mismatches, invalid radii: torch lists them all
        raise ConversionError(f"the tensors do not fit the inferred {arch['norm']} ResNet-{arch['depth']}: "
                              + str(e).replace("\n\t", "; ").strip()) from e
    if result.unexpected_keys:
        raise ConversionError(f"unrecognised keys: {sorted(result.unexpected_keys)[:10]}")
    # The authors' layers have no num_batches_tracked: those are the only keys allowed to be missing.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing:
        raise ConversionError(f"keys missing from the checkpoint: {sorted(missing)[:10]}")
    layers = [m for m in model.modules() if hasattr(m, "mean_weight")]
    for layer in layers:
        # The authors' layers compute the unbiased IN variance: the flag travels in every converted file,
        # so whichever model loads it reproduces their math with nothing set by hand.
        layer.official_compat = True
    _check_finite(model)
    model_sd = model.state_dict()
    norms = (f"{arch['norm']} over {list(arch['candidates'])}, {len(layers)} norm layers" if layers
             else arch["norm"])
    ce = ", with CE (groups of {} in the stem, {} in the blocks)".format(*arch["ce_group_sizes"]) if arch["ce"] else ""
    report = [f"ResNet-{arch['depth']} v{arch['version']}, {norms}{ce}"
              + (f", {arch['num_classes']}-way fc" if arch["num_classes"] else "")]
    if arch["sparse"]:
        fixed = sum(2 - len(m.open_vectors()) for m in layers)
        counts = {}
        for m in layers:
            for s in m.selection:
                if s is not None:
                    counts[s] = counts.get(s, 0) + 1
        report.append(f"fixed selections: {fixed} of {2 * len(layers)} ratio vectors {counts}")
    return PublishedModel(**arch, state_dict=model_sd, report=report)


def canonical_switch_norm(prefix: str, entries: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """One of the authors' ``SwitchNorm`` layers (its entries by name, any of their layouts) as our layer's
    canonical state, with the authors' math (``official_compat_flag``); ``prefix`` names it in errors."""
    ratios = entries.get("mean_weight")
    if ratios is None or ratios.numel() not in (2, 3) or entries.get("var_weight") is None:
        raise ConversionError(f"{prefix}: a SwitchNorm needs mean_weight and var_weight with 3 ([IN, LN, BN]) or 2 "
                              f"([IN, LN]) entries")
    if "weight" not in entries:
        raise ConversionError(f"{prefix}: a SwitchNorm without its weight")
    layer = SwitchNorm2d(entries["weight"].numel(), candidates=("IN", "LN", "BN")[:ratios.numel()],
                         official_compat=True)
    try:
        result = layer.load_state_dict(dict(entries), strict=False)
    except RuntimeError as e:
        raise ConversionError(f"{prefix}: " + str(e).replace("\n\t", "; ").strip()) from e
    missing = [k for k in result.missing_keys if k not in ("num_batches_tracked", "official_compat_flag")]
    if missing or result.unexpected_keys:
        raise ConversionError(f"{prefix}: missing {missing}, unexpected {result.unexpected_keys}")
    layer.official_compat = True
    state = layer.state_dict()
    for name, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ConversionError(f"{prefix}.{name} holds NaN or inf values (a diverged run or a damaged file)")
    return state


def _check_finite(model: torch.nn.Module) -> None:
    """Refuse statistics, parameters or radii that are NaN/inf or out of range (a diverged or damaged file)."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ConversionError(f"{name} holds NaN or inf values (a diverged run or a damaged file)")
        if name.endswith("running_var") and (t < 0).any():
            raise ConversionError(f"{name} holds negative variances")
        if name.endswith("radius") and (t < 0).any():
            raise ConversionError(f"{name} is negative")


def _block_layout(sd: Dict[str, Tensor]) -> Tuple[str, Tuple[int, ...]]:
    """``("basic" | "bottleneck", blocks per stage)`` read from ``layerK.i.`` keys."""
    blocks = {}
    for key in sd:
        m = re.match(r"layer([1-4])\.(\d+)\.", key)
        if m:
            blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    kind = "bottleneck" if "layer1.0.conv3.weight" in sd else "basic"
    return kind, tuple(blocks.get(i, 0) for i in range(1, 5))


def _check_v1(model: PublishedModel, framework: str) -> None:
    if model.version != 1:
        raise ConversionError(f"{framework}: the v2 (pre-activation) ResNet has no counterpart there; use a v1 model")
