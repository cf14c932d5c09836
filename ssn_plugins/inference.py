"""Trained SN / SSN models as inference models of plain native layers.

:func:`for_inference` replaces every :class:`~ssn_plugins.SwitchNorm` layer
(SN, SSN, their Sync variants) by what it computes in eval mode, and folds
batch norms that consume a convolution's output into that convolution:

- a layer whose mean and variance both use one candidate (a fixed SSN
  layer, or a soft one whose SparsestMax ratios are one-hot) becomes the
  native module where one takes every input the layer takes: BN
  ``BatchNorm1d/2d/3d`` in eval with the running statistics, LN
  ``GroupNorm(1, C)``, GN ``GroupNorm(G, C)`` with more than one channel a
  group. IN becomes a one-candidate :class:`~ssn_plugins.FrozenSwitchNorm`:
  ``InstanceNorm`` refuses 1x1 maps and empty batches, on which the trained
  layer outputs ``beta`` and an empty tensor;
- any other layer becomes a :class:`~ssn_plugins.FrozenSwitchNorm`: ratios
  and BN statistics frozen into buffers, only the candidates with a nonzero
  ratio computed, plain tensor operations;
- a BN (ours turned native, ``torch.nn``'s, ``FrozenBatchNorm2d``) that
  consumes a convolution's output, and is its only consumer, is folded into
  the convolution's weight and bias and becomes ``nn.Identity``. The data
  flow decides, not the names: detectron2's ``Conv2d(norm=...)``, mmcv's
  ``ConvModule`` with ``'norm'`` right after ``'conv'`` in its ``order`` and
  consecutive children of a plain ``nn.Sequential`` show it by their
  structure; any other module's forward is traced with ``torch.fx`` (its
  children as leaves), so a pre-activation block's ``bn -> relu -> conv``
  never folds, and a module that does not trace folds nothing.

The result equals the original eval model up to float rounding (the tests
check 1e-5 relative on real images for ResNets, detectron2, mmseg and
mmaction2 models) and traces, exports and compiles.
"""
import copy
import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

import torch
import torch.fx
from torch import nn

from .convert import _replace_children, is_plain_norm, take_place
from .functional import kind_of
from .layers.channel_equilibrium import ChannelEquilibrium
from .layers.frozen_switch_norm import FrozenSwitchNorm
from .layers.norm_act import NormActivation
from .layers.switch_norm import SwitchNorm, SwitchNorm1d, SwitchNorm2d, SwitchNorm3d

__all__ = ["for_inference", "InferenceReport", "fold_conv_norm"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NATIVE_BN = {SwitchNorm1d: nn.BatchNorm1d, SwitchNorm2d: nn.BatchNorm2d, SwitchNorm3d: nn.BatchNorm3d}


@dataclass
class InferenceReport:
    """What :func:`for_inference` did, one ``(module name, before, after)`` row per change.

    ``replaced``: SN/SSN layers and what they became; ``folded``: norms
    folded into the convolution named in ``after``; ``kept``: normalization
    layers left as they are (e.g. Channel Equilibrium, a BN that does not
    consume a convolution's output, or whose module does not trace).
    """
    replaced: List[Tuple[str, str, str]] = field(default_factory=list)
    folded: List[Tuple[str, str, str]] = field(default_factory=list)
    kept: List[Tuple[str, str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line of counts, e.g. ``53 SN/SSN layers replaced (...), 35 norms folded, 0 kept``."""
        kinds = {}
        for _, _, after in self.replaced:
            kind = after.split("(")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        return (f"{len(self.replaced)} SN/SSN layers replaced" + (f" ({detail})" if detail else "")
                + f", {len(self.folded)} norms folded into convolutions, {len(self.kept)} norm layers kept")

    def __str__(self) -> str:
        lines = [self.summary()]
        for title, rows in (("replaced", self.replaced), ("folded", self.folded), ("kept", self.kept)):
            lines += [f"  {title:8s} {name or '(model)'}: {before} -> {after}" for name, before, after in rows]
        return "\n".join(lines)


def for_inference(model: nn.Module, fold: bool = True, inplace: bool = False) -> Tuple[nn.Module, InferenceReport]:
    """An eval-mode copy of ``model`` whose SN/SSN layers are native layers or :class:`FrozenSwitchNorm`.

    Args:
        model: a trained model (any mode; the result is in eval mode, and
            equals ``model.eval()``).
        fold: fold batch norms that consume a convolution's output into it
            (see the module docstring for how the data flow is read).
        inplace: change ``model`` itself instead of a deep copy.

    Returns:
        ``(inference_model, report)``; ``print(report)`` lists every change.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    report = InferenceReport()
    names = {id(m): name for name, m in model.named_modules(remove_duplicate=False)}

    def replace(module: nn.Module) -> Optional[nn.Module]:
        if not isinstance(module, SwitchNorm):
            return None
        new = _inference_layer(module)
        if isinstance(module, NormActivation):  # what the layer applies after the norm stays, after it
            new = nn.Sequential(OrderedDict(norm=new, drop=module.drop, act=module.act))
        report.replaced.append((names[id(module)], _describe(module), _describe(new)))
        return new

    model = _replace_children(model, replace)
    if fold:
        folded_convs = set()
        registered = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
        for conv_name, conv, parent, attr in _conv_norm_pairs(model):
            norm = getattr(parent, attr)
            # a convolution registered twice runs twice: folding one norm into it would change the other use
            if id(conv) not in folded_convs and registered[id(conv)] == 1 and _foldable(norm, conv):
                fold_conv_norm(conv, norm)
                folded_convs.add(id(conv))
                setattr(parent, attr, take_place(norm, nn.Identity()))
                report.folded.append((f"{names.get(id(parent), '')}.{attr}".lstrip("."), _describe(norm),
                                      f"folded into {conv_name}"))
    for name, module in model.named_modules():
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, ChannelEquilibrium)) or _is_frozen_bn(module):
            report.kept.append((name, _describe(module), "kept"))
    return model, report


def _describe(module: nn.Module) -> str:
    if isinstance(module, NormActivation):
        return f"{_describe_norm(module)} + {type(module.act).__name__}"
    if isinstance(module, nn.Sequential) and list(module._modules) == ["norm", "drop", "act"]:  # (made above)
        return f"{_describe_norm(module.norm)} + {type(module.act).__name__}"
    return _describe_norm(module)


def _describe_norm(module: nn.Module) -> str:
    if isinstance(module, FrozenSwitchNorm):
        return f"FrozenSwitchNorm({'+'.join(module.candidates)})"
    if isinstance(module, nn.GroupNorm):
        return f"GroupNorm({module.num_groups}, {module.num_channels})"
    if isinstance(module, SwitchNorm):
        selection = getattr(module, "selection", (None, None))
        if None not in selection:
            return f"{type(module).__name__}(fixed {selection[0]}/{selection[1]})"
    return type(module).__name__


def _inference_layer(layer: SwitchNorm) -> nn.Module:
    """The native module, or :class:`FrozenSwitchNorm`, computing what ``layer`` computes in eval mode."""
    # the ratios in the dtype the statistics are mixed in: float64 for a float64 layer, float32 otherwise
    ratio_dtype = torch.float64 if layer.mean_weight.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        mean_ratios, var_ratios = (r.detach().to(ratio_dtype) for r in layer.ratios())
    used = [k for k in range(len(layer.candidates)) if mean_ratios[k] != 0 or var_ratios[k] != 0]
    candidates = [layer.candidates[k] for k in used]
    if len(used) == 1:
        native = _native_layer(layer, candidates[0])
        if native is not None:
            return native
    factory = {"device": layer.mean_weight.device}
    stats = "BN" in candidates and layer.running_mean is not None
    return FrozenSwitchNorm(
        layer.num_features, mean_ratios[used].to(**factory), var_ratios[used].to(**factory), candidates, layer.eps,
        layer.weight, layer.bias, layer.running_mean if stats else None, layer.running_var if stats else None,
        official_compat=layer.official_compat).to(**factory)


def _native_layer(layer: SwitchNorm, candidate: str) -> Optional[nn.Module]:
    """``torch.nn``'s module for ``candidate`` under ``layer``'s settings, or ``None`` where none matches."""
    kind = kind_of(candidate)
    rank_class = next((c for c in _NATIVE_BN if isinstance(layer, c)), None)
    # The authors' math changes BN's training statistics only (eval reads the running buffers either way); the
    # other candidates' unbiased IN variance has no native module.
    if layer.official_compat and not kind.batch_statistics:
        return None
    tracked = layer.running_mean is not None
    native = kind.native_module(layer.num_features, layer.eps, layer.affine, tracked,
                                batch_norm_class=_NATIVE_BN.get(rank_class), device=layer.mean_weight.device,
                                dtype=layer.mean_weight.dtype)
    if native is None:
        return None  # (IN and one-channel groups stay FrozenSwitchNorm, which takes 1x1 maps: IN's part is beta)
    if kind.batch_statistics and tracked:
        native.running_mean.copy_(layer.running_mean)
        native.running_var.copy_(layer.running_var)
        native.num_batches_tracked.copy_(layer.num_batches_tracked)
    if layer.affine:
        with torch.no_grad():
            native.weight.copy_(layer.weight)
            native.bias.copy_(layer.bias)
    return native.eval()


def _is_frozen_bn(module: nn.Module) -> bool:
    # detectron2's and torchvision's FrozenBatchNorm2d, recognised without importing either
    return type(module).__name__ == "FrozenBatchNorm2d" and all(
        hasattr(module, a) for a in ("weight", "bias", "running_mean", "running_var", "eps"))


def _foldable(norm: nn.Module, conv: nn.Module) -> bool:
    """Whether ``norm`` is a per-channel affine map of ``conv``'s output channels in eval mode."""
    if _is_frozen_bn(norm):
        channels = norm.weight.numel()
    elif is_plain_norm(norm) and isinstance(norm, nn.modules.batchnorm._BatchNorm) and not norm.training \
            and norm.running_mean is not None:  # (a subclass with its own forward, e.g. an activation, is not)
        channels = norm.num_features
    else:
        return False
    return channels == conv.out_channels


def _conv_norm_pairs(model: nn.Module) -> Iterator[Tuple[str, nn.Module, nn.Module, str]]:
    """``(conv name, conv, owner, norm attribute)`` for every norm that consumes a convolution's output, and only it.

    detectron2's ``Conv2d(norm=...)``, mmcv's ``ConvModule`` and a plain
    ``nn.Sequential`` say so by their structure. Any other module's forward is
    traced with ``torch.fx``, its children as leaves: a convolution whose one
    user is a norm called on nothing else is a pair, whatever the names (a
    pre-activation block's ``bn1 -> relu -> conv1`` is not). A module that does
    not trace folds nothing.
    """
    for name, parent in list(model.named_modules()):
        prefix = f"{name}." if name else ""
        if isinstance(parent, _CONVS):
            if isinstance(getattr(parent, "norm", None), nn.Module):
                yield name, parent, parent, "norm"  # detectron2's Conv2d(norm=...): conv, then norm
            continue
        if isinstance(getattr(parent, "norm_name", None), str) and isinstance(getattr(parent, "conv", None), _CONVS):
            order = list(getattr(parent, "order", ("conv", "norm", "act")))
            if "norm" in order and order.index("norm") == order.index("conv") + 1:
                yield prefix + "conv", parent.conv, parent, parent.norm_name  # mmcv's ConvModule
            continue
        children = list(parent.named_children())
        if type(parent).forward is nn.Sequential.forward:
            for (conv_name, conv), (norm_name, _) in zip(children, children[1:]):
                if isinstance(conv, _CONVS):
                    yield prefix + conv_name, conv, parent, norm_name
            continue
        if any(isinstance(c, _CONVS) for _, c in children) and any(_may_fold(c) for _, c in children):
            for conv_path, norm_path in _traced_pairs(parent):
                owner_path, _, attr = norm_path.rpartition(".")
                yield prefix + conv_path, parent.get_submodule(conv_path), parent.get_submodule(owner_path), attr


def _may_fold(module: nn.Module) -> bool:
    return _is_frozen_bn(module) or isinstance(module, nn.modules.batchnorm._BatchNorm)


class _ChildrenAsLeaves(torch.fx.Tracer):
    """Traces one module's own forward: every submodule it calls is one node."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return True


def _traced_pairs(parent: nn.Module) -> List[Tuple[str, str]]:
    """``(conv path, norm path)`` in ``parent`` where the norm is the one consumer of the conv's output."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = _ChildrenAsLeaves().trace(parent)
    except Exception:  # control flow on tensors, non-tensor inputs, ...: the data flow is unknown, nothing folds
        return []
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    read = {str(node.target).rpartition(".")[0] for node in graph.nodes if node.op == "get_attr"}
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or calls[node.target] != 1 or node.target in read \
                or not isinstance(parent.get_submodule(node.target), _CONVS) or len(node.users) != 1:
            continue
        (user,) = node.users
        if user.op == "call_module" and calls[user.target] == 1 and user.args == (node,) and not user.kwargs:
            pairs.append((node.target, user.target))
    return pairs


@torch.no_grad()
def fold_conv_norm(conv: nn.Module, norm: nn.Module) -> None:
    """Fold eval-mode batch norm ``norm`` into ``conv`` (weight and bias, in place; computed in float64).

    ``norm(conv(x)) == conv'(x)`` with ``W' = W * s`` and ``b' = (b - mean) * s + beta``,
    ``s = gamma / sqrt(running_var + eps)`` per output channel.
    """
    weight = norm.weight.double() if norm.weight is not None else 1.0
    bias = norm.bias.double() if norm.bias is not None else 0.0
    scale = weight * torch.rsqrt(norm.running_var.double() + norm.eps)
    conv_bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    new_bias = (conv_bias - norm.running_mean.double()) * scale + bias
    conv.weight.copy_(conv.weight.double() * scale.reshape((-1,) + (1,) * (conv.weight.dim() - 1)))
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.copy_(new_bias)
