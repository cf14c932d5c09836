"""matplotlib charts of which normalizer each layer chose (the SN/SSN papers' per-layer figures).

Every function returns PNG bytes; nothing is shown on screen (the Agg backend).
"""
import io
import re
from typing import Dict, List, Optional, Sequence, Tuple

#: a colour per candidate, the same in every chart
COLOURS = {"IN": "#4c72b0", "LN": "#dd8452", "BN": "#55a868"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return out.getvalue()


def png_to_rgb(png: bytes):
    """A PNG as an (H, W, 3) uint8 RGB array, for TensorBoard / mmengine visualizers."""
    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def stage_of(layer: str) -> str:
    """The network stage a layer belongs to, from its name (detectron2 ``res3``, torchvision / mmcv ``layer2``)."""
    name = re.sub(r"^(module\.|model\.|backbone\.|bottom_up\.)+", "", layer)
    found = re.search(r"(res\d+|layer\d+)", name)
    if found:
        return found.group(1)
    head = name.split(".")[0]
    if head in ("stem", "conv1", "bn1", "sn1", "norm1", "0", "1"):
        return "stem"
    return re.sub(r"_?\d+$", "", head) or head


def chosen(row: dict, vector: str) -> str:
    """A layer's normalizer for ``vector``: the fixed selection, else the largest ratio (soft)."""
    selection = row.get("selection")
    if selection is not None:
        fixed = selection[0 if vector == "mean" else 1]
        if fixed is not None:
            return fixed
    ratios = row[f"{vector}_ratios"]
    return row["candidates"][max(range(len(ratios)), key=ratios.__getitem__)]


def layer_ratio_chart(rows: Sequence[dict], title: str = "") -> bytes:
    """Per layer, in network order: stacked mean and variance ratios over the candidates; a fixed selection
    is marked with a black triangle above its bar."""
    plt = _pyplot()
    if not rows:
        raise ValueError("no SN/SSN layers to chart")
    width = max(8.0, 0.16 * len(rows) + 2)
    fig, axes = plt.subplots(2, 1, figsize=(width, 6), sharex=True)
    x = list(range(len(rows)))
    for ax, vector in zip(axes, ("mean", "var")):
        bottom = [0.0] * len(rows)
        for candidate in dict.fromkeys(c for r in rows for c in r["candidates"]):
            heights = [r[f"{vector}_ratios"][r["candidates"].index(candidate)] if candidate in r["candidates"]
                       else 0.0 for r in rows]
            ax.bar(x, heights, bottom=bottom, width=0.85, color=COLOURS.get(candidate, "#999999"), label=candidate)
            bottom = [b + h for b, h in zip(bottom, heights)]
        fixed = [i for i, r in enumerate(rows) if r.get("selection") is not None
                 and r["selection"][0 if vector == "mean" else 1] is not None]
        if fixed:
            ax.scatter(fixed, [1.04] * len(fixed), marker="v", color="black", s=10, label="fixed", clip_on=False)
        ax.set_ylim(0, 1.08)
        ax.set_ylabel(f"{vector} ratios")
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8)  # outside: bars reach 1
    axes[1].set_xticks(x)
    axes[1].set_xticklabels([r["name"] for r in rows], rotation=90, fontsize=6)
    axes[0].set_title(title or f"normalizer ratios of {len(rows)} layers")
    return _png(fig)


def stage_share_chart(rows: Sequence[dict], title: str = "") -> bytes:
    """The share of layers per stage whose mean / variance use each normalizer (fixed, else largest ratio)."""
    plt = _pyplot()
    if not rows:
        raise ValueError("no SN/SSN layers to chart")
    stages = list(dict.fromkeys(stage_of(r["name"]) for r in rows))
    candidates = list(dict.fromkeys(c for r in rows for c in r["candidates"]))
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(stages) * 2), 3.6), sharey=True)
    for ax, vector in zip(axes, ("mean", "var")):
        bottom = [0.0] * len(stages)
        for candidate in candidates:
            shares = []
            for stage in stages:
                in_stage = [r for r in rows if stage_of(r["name"]) == stage]
                shares.append(sum(chosen(r, vector) == candidate for r in in_stage) / len(in_stage))
            ax.bar(stages, shares, bottom=bottom, color=COLOURS.get(candidate, "#999999"), label=candidate)
            bottom = [b + s for b, s in zip(bottom, shares)]
        ax.set_title(f"{vector}")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    axes[0].set_ylabel("share of layers")
    axes[1].legend(loc="upper right", fontsize=8)
    fig.suptitle(title or "normalizer per stage")
    return _png(fig)


def trajectory_chart(ratios: Dict[Tuple[str, str], List[Tuple[int, float]]],
                     one_hot: List[Tuple[int, float]], title: str = "") -> bytes:
    """The mean ratio of each candidate over the iterations (mean and variance), and the one-hot count."""
    plt = _pyplot()
    if not ratios and not one_hot:
        raise ValueError("the run logged no ratio or one-hot scalars")
    fig, ax = plt.subplots(figsize=(8, 4))
    for (vector, candidate), points in sorted(ratios.items()):
        steps, values = zip(*points)
        ax.plot(steps, values, color=COLOURS.get(candidate, "#999999"), marker="o" if len(steps) < 20 else None,
                linestyle="-" if vector == "mean" else "--", label=f"{vector} {candidate}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("ratio averaged over layers")
    if one_hot:
        twin = ax.twinx()
        steps, values = zip(*one_hot)
        twin.plot(steps, values, color="black", linewidth=1, marker="o" if len(steps) < 20 else None,
                  label="one-hot vectors")
        twin.set_ylabel("one-hot ratio vectors")
        twin.legend(loc="lower right", fontsize=8)
    if ratios:
        ax.legend(loc="upper left", fontsize=8, ncol=2)
    ax.set_title(title or "ratio trajectories")
    return _png(fig)


def metric_by_batch_chart(points: Dict[str, List[Tuple[int, float]]], metric: str = "top1",
                          title: str = "") -> bytes:
    """``metric`` against images per batch, one line per norm (the papers' batch-size figure)."""
    plt = _pyplot()
    if not points:
        raise ValueError("no finished runs to chart")
    fig, ax = plt.subplots(figsize=(6, 4))
    for norm, values in sorted(points.items()):
        values = sorted(values)
        ax.plot([v[0] for v in values], [v[1] for v in values], marker="o", label=norm)
    ax.set_xscale("log", base=2)
    sizes = sorted({v[0] for values in points.values() for v in values})
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlabel("images per batch")
    ax.set_ylabel(metric)
    ax.legend()
    ax.set_title(title or f"{metric} by batch size")
    return _png(fig)


def selection_charts(rows: Sequence[dict], series: Optional[Dict] = None, title: str = "") -> List[Tuple[str, bytes]]:
    """The charts of :mod:`tools.analyze_selection`, as ``(file name, PNG)``."""
    from .scalars import ratio_series
    charts = [("selection_per_layer.png", layer_ratio_chart(rows, title)),
              ("selection_per_stage.png", stage_share_chart(rows, title))]
    if series:
        ratios, one_hot = ratio_series(series)
        if ratios or one_hot:
            charts.append(("ratio_trajectories.png", trajectory_chart(ratios, one_hot, title)))
    return charts
