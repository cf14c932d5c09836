"""Reading the published SN/SSN/CE ImageNet checkpoints and renaming them for each framework.

A published file is a ``torch.save`` dict with ``state_dict`` (and ``epoch``,
``best_prec1``, ``optimizer``), or the state dict itself, keys often prefixed
``module.``. The CE release is a BatchNorm ResNet (``bn1``, ``layerK.i.bnN``)
with CE modules ``ce1`` and ``layerK.i.ce``; its BN layers are renamed to our
``sn`` names. :func:`read_published` unwraps it, infers the architecture and
loads it into :class:`ssn_plugins.models.ResNet`, whose norm layers accept
the authors' layout; the result is a canonical state dict (``(C,)``
parameters, ``bool`` flags) that the ``to_*`` functions rename. Pure key
mapping: no framework is imported here.
"""
import errno
import os
import pickle
import pickletools
import shutil
import re
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .layers.channel_equilibrium import CE_BLOCK_GROUP_SIZE, CE_STEM_GROUP_SIZE
from .layers.switch_norm import SwitchNorm2d
from .models.resnet import DEPTHS, ResNet

__all__ = ["PublishedModel", "read_published", "unwrap_state_dict", "canonical_switch_norm", "load_checkpoint_file",
           "build_resnet", "to_detectron2", "to_openmmlab", "to_i3d", "convert", "save_atomically", "TARGETS",
           "inflate_openmmlab_resnet", "ConversionError", "I3D_R50_INFLATE"]

#: norm names whose layers take ``candidates``
SWITCHABLE = ("SN", "SSN", "SyncSN", "SyncSSN")

#: mmaction2's I3D ResNet-50 inflation pattern (configs/_base_/models/i3d_r50.py).
I3D_R50_INFLATE = ((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0))


class ConversionError(ValueError):
    """A checkpoint this converter does not recognise, with the reason."""


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

    def architecture(self) -> dict:
        """The fields that rebuild the model (saved beside converted weights)."""
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


def build_resnet(arch: dict, **overrides) -> ResNet:
    """The :class:`ResNet` described by :meth:`PublishedModel.architecture` (plus ``overrides``)."""
    arch = {**arch, **overrides}
    norm_kwargs = {"candidates": tuple(arch["candidates"])} if arch["norm"] in SWITCHABLE else {}
    return ResNet(arch["depth"], arch["norm"], norm_kwargs=norm_kwargs,
                  version=arch["version"], ceil_mode_pool=arch["ceil_mode_pool"], ce=arch["ce"],
                  ce_group_sizes=tuple(arch.get("ce_group_sizes", (CE_STEM_GROUP_SIZE, CE_BLOCK_GROUP_SIZE))),
                  num_classes=arch["num_classes"])


def pickled_imports(path) -> Optional[List[str]]:
    """The ``module.name`` globals the pickle in ``path`` (a ``torch.save`` zip's ``data.pkl``, else the file) would
    import, read with :mod:`pickletools` without running anything; ``None`` when it is not a pickle at all."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if member is None:
                    return None
                data = archive.read(member)
        else:
            data = path.read_bytes()
        # the values pushed, as far as they matter here: strings (a STACK_GLOBAL's module and name), else None
        found, pushed, memo = [], [None], {}
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif name == "STACK_GLOBAL" and len(pushed) >= 2 and None not in pushed[-2:]:
                found.append(f"{pushed[-2]}.{pushed[-1]}")
            if name == "MEMOIZE":
                memo[len(memo)] = pushed[-1]
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = pushed[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(arg))
            elif opcode.stack_after:
                pushed.append(arg if isinstance(arg, str) and ("UNICODE" in name or "STRING" in name) else None)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile):  # not a pickle, or a damaged one
        return None
    return list(dict.fromkeys(found))


def refused_import(error: Exception, imports: List[str]) -> str:
    """What a weights-only load refused: the global torch names in ``error``, else the first of ``imports``."""
    refused = re.search(r"GLOBAL (\S+)", str(error))
    if refused:
        return refused.group(1)
    return ", ".join(imports[:6]) + (", ..." if len(imports) > 6 else "")


#: how to allow full unpickling, as the converter offers it (other tools name their own flag)
CONVERTER_TRUST = ("only if you trust where the file came from, load it with trust_pickle=True "
                   "(tools/convert_checkpoint.py --trust-pickle)")


def load_checkpoint_file(path, trust_pickle: bool = False, how_to_trust: str = CONVERTER_TRUST):
    """``torch.load`` of ``path`` on CPU, with every failure turned into a :class:`ConversionError` naming the file.

    ``weights_only=True`` unless ``trust_pickle``; the advice ``how_to_trust``
    (the caller's way to full unpickling, or why there is none) is given only
    when that is what refused the file.
    """
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"{path}: no such file")
    if not path.is_file():
        raise ConversionError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ConversionError(f"{path}: the file is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        # torch says "weights_only" for any input it cannot read; the advice only fits a real pickle that imports
        # something: name what it imports, so that the user sees what full unpickling would run
        imports = None if trust_pickle else pickled_imports(path)
        if imports:
            shown = refused_import(e, imports)
            kind = "" if zipfile.is_zipfile(path) else "a plain pickle, not a torch.save file (a detectron2 .pkl?); "
            raise ConversionError(f"{path}: refused by weights-only loading: {kind}it imports {shown}; "
                                  f"{how_to_trust}") from e
        if imports is None and not trust_pickle:  # torch's own text would advise weights_only=False here too
            raise ConversionError(f"{path}: not a readable checkpoint (neither a torch.save file nor a pickle)") from e
        first = str(e).strip().splitlines()[0]
        raise ConversionError(f"{path}: not a readable checkpoint ({first})") from e
    except Exception as e:  # noqa: BLE001 - truncated zips, foreign formats, ...: all end as one message
        raise ConversionError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e


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
    model = build_resnet(arch)
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


def _check_v1(model: PublishedModel, framework: str) -> None:
    if model.version != 1:
        raise ConversionError(f"{framework}: the v2 (pre-activation) ResNet has no counterpart there; use a v1 model")


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


def convert(model: PublishedModel, target: str, conv1_t: int = 5, inflate_style: str = "3x1x1"
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


def _file_mode() -> int:
    """The mode ``open`` gives a new file under the process's umask (0644 under the usual 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_atomically(obj: dict, path, pickled: bool = False) -> None:
    """Write ``obj`` to ``path`` (``pickle`` for detectron2's ``.pkl``, else ``torch.save``) atomically.

    The file appears complete or not at all: it is written beside ``path``
    and renamed over it, so an interrupted write never leaves a truncated
    file under the final name. Failures name the path.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise ConversionError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            if pickled:
                pickle.dump(obj, f)
            else:
                torch.save(obj, f)
        os.chmod(tmp, _file_mode())  # mkstemp's 0600 would keep a group-shared cache from the group
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports an unwritable file as a RuntimeError
        reason = getattr(e, "strerror", None) or str(e).strip().splitlines()[0]
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or "unexpected pos" in str(e):
            free = shutil.disk_usage(path.parent).free / 2**20
            reason += (f" (the write stopped short: {free:.0f} MiB are free in {path.parent}; a full disk, a quota or "
                       f"a file-size limit (ulimit -f) stops it so)")
        raise ConversionError(f"cannot write {path}: {reason}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


def _block_layout(sd: Dict[str, Tensor]) -> Tuple[str, Tuple[int, ...]]:
    """``("basic" | "bottleneck", blocks per stage)`` read from ``layerK.i.`` keys."""
    blocks = {}
    for key in sd:
        m = re.match(r"layer([1-4])\.(\d+)\.", key)
        if m:
            blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    kind = "bottleneck" if "layer1.0.conv3.weight" in sd else "basic"
    return kind, tuple(blocks.get(i, 0) for i in range(1, 5))


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
