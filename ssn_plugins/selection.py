"""Which normalizer each SN/SSN layer uses, and the training scalars that follow it."""
from typing import Dict, List, Mapping

import torch
from torch import nn

from .layers.sparse_switch_norm import SparseSwitchNorm
from .layers.switch_norm import SwitchNorm
from .sparsestmax import sparsestmax

__all__ = ["describe_selection", "describe_state_dict", "format_selection", "average_ratios", "count_selections",
           "radius_scalars", "ratio_scalars", "SCALAR_PREFIX", "CHART_TAG"]

#: the prefix of every training scalar (TensorBoard tag, event-storage key, log field) the tools write
SCALAR_PREFIX = "ssn/"
#: the image tag of the per-layer ratio chart the training hooks log (:mod:`ssn_plugins.selection_plots`)
CHART_TAG = f"{SCALAR_PREFIX}selection_per_layer"


@torch.no_grad()
def describe_selection(model: nn.Module) -> List[Dict]:
    """One row per SN/SSN layer: its name, candidates, current mean/var ratios and fixed selection.

    Each row is ``{"name", "type", "candidates", "mean_ratios", "var_ratios",
    "selection"}`` where the ratios are lists of floats in candidate order and
    ``selection`` is ``(mean candidate, var candidate)`` for an SSN layer
    (``None`` entries while still soft) and ``None`` for SN.
    """
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, SwitchNorm):
            mean_ratios, var_ratios = m.ratios()
            rows.append({
                "name": name or type(m).__name__,
                "type": type(m).__name__,
                "candidates": list(m.candidates),
                "mean_ratios": [round(v, 4) for v in mean_ratios.float().tolist()],
                "var_ratios": [round(v, 4) for v in var_ratios.float().tolist()],
                "selection": m.selection if isinstance(m, SparseSwitchNorm) else None,
            })
    return rows


@torch.no_grad()
def average_ratios(model: nn.Module) -> Dict[str, float]:
    """The ratio of each candidate averaged over the SN/SSN layers that have it.

    Keys are ``"mean_ratio_<IN|LN|BN>"`` and ``"var_ratio_<...>"``; empty
    without SN/SSN layers. For training scalars (TensorBoard and the like).
    """
    sums, counts = {}, {}
    for m in model.modules():
        if isinstance(m, SwitchNorm):
            for kind, ratios in zip(("mean", "var"), m.ratios()):
                for name, value in zip(m.candidates, ratios.float().tolist()):
                    key = f"{kind}_ratio_{name}"
                    sums[key] = sums.get(key, 0.0) + value
                    counts[key] = counts.get(key, 0) + 1
    return {key: total / counts[key] for key, total in sums.items()}


def radius_scalars(state: Mapping) -> Dict[str, float]:
    """``ssn/radius`` and ``ssn/one_hot_vectors`` from a :meth:`RadiusScheduler.step` result.

    The one naming of these curves: detectron2's event storage, mmengine's
    logs and visualizers and the pretraining tool's TensorBoard all use it.
    """
    return {f"{SCALAR_PREFIX}radius": float(state["radius"]), f"{SCALAR_PREFIX}one_hot_vectors": int(state["fixed"])}


def ratio_scalars(model: nn.Module) -> Dict[str, float]:
    """``ssn/mean_ratio_<candidate>`` and ``ssn/var_ratio_<...>``: :func:`average_ratios` under the scalar prefix."""
    return {f"{SCALAR_PREFIX}{key}": value for key, value in average_ratios(model).items()}


def format_selection(rows: List[Dict]) -> str:
    """A plain-text table of :func:`describe_selection`'s rows."""
    if not rows:
        return "(no SN/SSN layers)"
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'layer':<{width}}  {'mean ratios':<24}  {'var ratios':<24}  selected"]
    for r in rows:
        def fmt(ratios, r=r):
            return " ".join(f"{c}={v:.2f}" for c, v in zip(r["candidates"], ratios))
        if r["selection"] is None:
            chosen = "soft (SN)"
        else:
            mean_sel, var_sel = r["selection"]
            chosen = f"mean={mean_sel or 'soft'}, var={var_sel or 'soft'}"
        lines.append(f"{r['name']:<{width}}  {fmt(r['mean_ratios']):<24}  {fmt(r['var_ratios']):<24}  {chosen}")
    return "\n".join(lines)


def count_selections(rows: List[Dict]) -> Dict[str, Dict[str, int]]:
    """How many SSN mean / variance vectors of :func:`describe_selection`'s rows selected each candidate.

    ``{"mean": {"IN": 19, "LN": 25, "BN": 25}, "var": {...}}``; vectors still soft count as ``"soft"``;
    SN layers (no selection) are left out.
    """
    counts = {"mean": {}, "var": {}}
    for row in rows:
        if row["selection"] is None:
            continue
        for kind, chosen in zip(("mean", "var"), row["selection"]):
            key = chosen or "soft"
            counts[kind][key] = counts[kind].get(key, 0) + 1
    return counts


def _candidates_from_state(state: Dict[str, torch.Tensor], prefix: str, k: int) -> List[str]:
    # A state dict holds no candidate names (detectron2's loader refuses non-tensor entries such as extra state),
    # so only the published layouts are read by name: [IN, LN, BN] with BN's running statistics, [IN, LN] without.
    # Three entries without running statistics may as well be [IN, LN, GN<g>].
    tracked = prefix + "running_mean" in state
    if k == 3 and tracked:
        return ["IN", "LN", "BN"]
    if k == 2 and not tracked:
        return ["IN", "LN"]  # the published batch-size-1 layers; with running statistics 2 entries are ambiguous
    return [f"candidate{i}" for i in range(k)]


@torch.no_grad()
def describe_state_dict(state: Dict[str, torch.Tensor]) -> List[Dict]:
    """:func:`describe_selection`'s rows from a saved state dict, without building the model.

    An SN/SSN layer is a prefix with ``mean_weight`` and ``var_weight`` logits;
    SSN layers also hold ``radius`` and the ``mean_fixed`` / ``var_fixed``
    flags. Ratios are the softmax (SN), or SparsestMax at the saved radius
    (SSN); a fixed vector is its one-hot logits. Three entries with running
    statistics are ``[IN, LN, BN]``, two without ``[IN, LN]``; other layouts
    are named ``candidate<i>``.
    """
    rows = []
    for key in state:
        if not key.endswith("mean_weight"):
            continue
        prefix = key[: -len("mean_weight")]
        mean_logits, var_logits = state[key], state.get(prefix + "var_weight")
        if var_logits is None or mean_logits.dim() != 1 or var_logits.shape != mean_logits.shape:
            continue
        candidates = _candidates_from_state(state, prefix, mean_logits.numel())
        sparse = prefix + "radius" in state
        ratios, selection = [], []
        for vector, logits in (("mean", mean_logits), ("var", var_logits)):
            logits = logits.detach().double().cpu()
            fixed = sparse and bool(state.get(prefix + f"{vector}_fixed", torch.tensor(False)).reshape(-1)[0])
            if fixed:
                values = torch.zeros_like(logits)
                values[int(logits.argmax())] = 1.0
            elif sparse:
                values = sparsestmax(logits, float(state[prefix + "radius"].reshape(-1)[0]))
            else:
                values = torch.softmax(logits, 0)
            ratios.append([round(v, 4) for v in values.tolist()])
            selection.append(candidates[int(logits.argmax())] if fixed else None)
        rows.append({"name": prefix.rstrip(".") or "(root)",
                     "type": "SparseSwitchNorm" if sparse else "SwitchNorm", "candidates": candidates,
                     "mean_ratios": ratios[0], "var_ratios": ratios[1],
                     "selection": tuple(selection) if sparse else None})
    return rows
