"""What a candidate normalizer is: one descriptor per kind, read by the statistics, the fused backward, the
native-kernel paths, :func:`~ssn_plugins.for_inference`, the selection reports and the charts.

Every candidate's statistics are the per-``(n, c)`` instance moments pooled over one axis: IN pools nothing, LN
pools over channels, GN over each group's channels, BN over samples (or reads the running buffers). Adding a
candidate means adding its descriptor here.
"""
import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CANDIDATES", "DEFAULT_GN_GROUPS", "Candidate", "kind_of", "group_count", "check_candidates",
           "colour"]

#: The candidate normalizers, in the order of the ratio vectors; a GroupNorm candidate ``"GN<groups>"`` follows them.
CANDIDATES: Tuple[str, ...] = ("IN", "LN", "BN")
#: the groups of a candidate written plain ``"GN"`` (GroupNorm's usual 32)
DEFAULT_GN_GROUPS = 32


@dataclass(frozen=True)
class Candidate:
    """One candidate normalizer.

    ``pools`` is what its statistics average the instance moments over: ``"nothing"`` (IN), ``"channels"`` (LN),
    ``"group"`` (each of ``groups`` channel groups: GN) or ``"samples"`` (BN, the one with running statistics).
    """
    name: str
    pools: str
    colour: str
    groups: Optional[int] = None

    @property
    def batch_statistics(self) -> bool:
        """Whether its statistics pool over the batch (and so have running buffers and synchronise)."""
        return self.pools == "samples"

    def pooled_view(self, n: int, c: int) -> Optional[Tuple[Tuple[int, ...], int]]:
        """``(shape, dim)``: the ``(N, C)`` instance moments viewed as ``shape`` pool over ``dim``; ``None`` for IN."""
        if self.pools == "nothing":
            return None
        if self.pools == "group":
            return (n, self.groups, c // self.groups), 2
        return (n, c), (1 if self.pools == "channels" else 0)

    def norm_groups(self, num_channels: int) -> Optional[int]:
        """The ``F.group_norm`` groups computing it over ``num_channels`` (IN: one a channel); ``None`` for BN."""
        return {"nothing": num_channels, "channels": 1, "group": self.groups}.get(self.pools)

    def native(self, x: Tensor, *, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor], bias: Optional[Tensor], training: bool, momentum: float,
               eps: float) -> Tensor:
        """This normalizer alone through PyTorch's own functional kernel."""
        if self.batch_statistics:
            return F.batch_norm(x, running_mean, running_var, weight, bias, training or running_mean is None,
                                momentum, eps)
        if self.pools == "nothing":
            return F.instance_norm(x, None, None, weight, bias, True, 0.0, eps)
        return F.group_norm(x, self.norm_groups(x.shape[1]), weight, bias, eps)

    def native_module(self, num_features: int, eps: float, affine: bool, track_running_stats: bool,
                      batch_norm_class=None, **factory) -> Optional[nn.Module]:
        """``torch.nn``'s module computing it in eval mode, or ``None`` where none does.

        ``batch_norm_class`` is the ``nn.BatchNorm{1,2,3}d`` of the input's rank. IN and one-channel groups have
        none: torch's InstanceNorm and GroupNorm refuse 1x1 maps (and InstanceNorm empty batches).
        """
        if self.batch_statistics:
            if batch_norm_class is None:
                return None
            return batch_norm_class(num_features, eps, affine=affine, track_running_stats=track_running_stats,
                                    **factory)
        groups = self.norm_groups(num_features)
        if self.pools == "nothing" or num_features // groups <= 1:
            return None
        return nn.GroupNorm(groups, num_features, eps, affine, **factory)


_KINDS = {"IN": Candidate("IN", "nothing", "#4c72b0"), "LN": Candidate("LN", "channels", "#dd8452"),
          "BN": Candidate("BN", "samples", "#55a868")}
_GN_COLOUR = "#8172b3"


def group_count(name: str) -> Optional[int]:
    """The number of channel groups of a ``"GN<groups>"`` candidate (``"GN32"`` -> 32); ``None`` for the others."""
    match = re.fullmatch(r"GN([1-9]\d*)", name) if isinstance(name, str) else None
    return int(match.group(1)) if match else None


def kind_of(name: str) -> Candidate:
    """The descriptor of a canonical candidate name (``"IN"``, ``"LN"``, ``"BN"``, ``"GN<groups>"``)."""
    kind = _KINDS.get(name)
    if kind is not None:
        return kind
    groups = group_count(name)
    if groups is None:
        raise ValueError(f"unknown normalizer candidate {name!r}; choose from {list(CANDIDATES)} and 'GN<groups>'")
    # (not cached here: forwards call this, and torch.compile traces it; check_candidates caches at build time)
    return Candidate(name, "group", _GN_COLOUR, groups)


def colour(name: str) -> str:
    """The chart colour of a candidate (the same in every chart); grey for a name that is none."""
    try:
        return kind_of(name).colour
    except ValueError:
        return "#999999"


def check_candidates(candidates: Sequence[str], num_features: Optional[int] = None) -> Tuple[str, ...]:
    """Validate a candidate list and return it in canonical ``[IN, LN, BN, GN<g>]`` order.

    ``"GN"`` stands for ``"GN32"``. With ``num_features``, a GN candidate's
    group count must divide it.
    """
    if isinstance(candidates, str):
        raise ValueError(f"candidates must be a list of names such as ('IN', 'LN', 'BN'), got the string "
                         f"{candidates!r}; write ({candidates!r},) for a single candidate")
    names = [f"GN{DEFAULT_GN_GROUPS}" if c == "GN" else c for c in candidates]
    unknown = [c for c in names if c not in CANDIDATES and group_count(c) is None]
    if unknown:
        raise ValueError(f"unknown normalizer candidate(s) {unknown}; choose from {list(CANDIDATES)} and "
                         f"'GN<groups>' (e.g. 'GN32'; 'GN' is 'GN{DEFAULT_GN_GROUPS}')")
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"candidates must be a non-empty list without repeats, got {list(candidates)}")
    group_norms = [c for c in names if group_count(c) is not None]
    if len(group_norms) > 1:
        raise ValueError(f"one GroupNorm candidate at most, got {group_norms}")
    if group_norms and num_features is not None and num_features % group_count(group_norms[0]):
        raise ValueError(f"candidate {group_norms[0]}: {group_count(group_norms[0])} groups do not divide "
                         f"{num_features} channels")
    for name in group_norms:  # a layer's forwards then find its GN descriptor without building one
        _KINDS.setdefault(name, kind_of(name))
    return tuple(c for c in CANDIDATES if c in names) + tuple(group_norms)
