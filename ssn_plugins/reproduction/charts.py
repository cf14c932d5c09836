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


#: the parts of a model after its backbone's stages, as :func:`stage_of` names them, in forward order
HEAD_PARTS = {"fpn_": "fpn", "neck.": "fpn", "proposal_generator.": "rpn", "rpn_head.": "rpn",
              "roi_heads.box_head.": "box head", "roi_head.bbox_head.": "box head",
              "roi_heads.mask_head.": "mask head", "roi_head.mask_head.": "mask head",
              "decode_head.": "decode head", "auxiliary_head.": "auxiliary head", "cls_head.": "classifier"}
_PART_ORDER = ("fpn", "rpn", "box head", "mask head", "decode head", "auxiliary head", "classifier")


def stage_of(layer: str) -> str:
    """The network stage a layer belongs to, from its name: ``stem``, the backbone's stages (detectron2 ``res3``,
    torchvision / mmcv ``layer2``), then the heads (``fpn``, ``rpn``, ``box head``, ``mask head``, ...)."""
    name = re.sub(r"^(module\.|model\.)+", "", layer)
    for prefix, part in HEAD_PARTS.items():
        if name.startswith(prefix) or name.startswith("backbone." + prefix):
            return part
    name = re.sub(r"^(backbone\.|bottom_up\.)+", "", name)
    found = re.search(r"(res\d+|layer\d+)", name)
    if found:
        return found.group(1)
    head = name.split(".")[0]
    if head in ("stem", "conv1", "bn1", "sn1", "norm1", "0", "1"):
        return "stem"
    return re.sub(r"_?\d+$", "", head) or head


def _stage_rank(stage: str) -> Tuple[int, int]:
    if stage == "stem":
        return 0, 0
    found = re.fullmatch(r"(res|layer)(\d+)", stage)
    if found:
        return 1, int(found.group(2))
    return (2, _PART_ORDER.index(stage)) if stage in _PART_ORDER else (3, 0)


def forward_order(rows: Sequence[dict]) -> List[dict]:
    """The rows in the order the network runs its layers: stem, backbone stages, then the heads. State dicts list
    modules as they were registered (detectron2's FPN registers its convolutions before the backbone)."""
    return [r for _, r in sorted(enumerate(rows), key=lambda item: (_stage_rank(stage_of(item[1]["name"])),
                                                                      item[0]))]


def _mark_stages(ax, stages: Sequence[str], top: float) -> None:
    """Dotted lines between stages and each stage's name above its layers."""
    start = 0
    for i in range(1, len(stages) + 1):
        if i == len(stages) or stages[i] != stages[start]:
            if i < len(stages):
                ax.axvline(i - 0.5, color="#555555", linestyle=":", linewidth=0.8)
            ax.text((start + i - 1) / 2, top, stages[start], ha="center", va="bottom", fontsize=7)
            start = i


def chosen(row: dict, vector: str) -> str:
    """A layer's normalizer for ``vector``: the fixed selection, else the largest ratio (soft)."""
    selection = row.get("selection")
    if selection is not None:
        fixed = selection[0 if vector == "mean" else 1]
        if fixed is not None:
            return fixed
    ratios = row[f"{vector}_ratios"]
    return row["candidates"][max(range(len(ratios)), key=ratios.__getitem__)]


def _fixed(row: dict, vector: str) -> Optional[str]:
    selection = row.get("selection")
    return None if selection is None else selection[0 if vector == "mean" else 1]


def layer_ratio_chart(rows: Sequence[dict], title: str = "") -> bytes:
    """Per layer, in forward order with the stage boundaries marked: stacked mean and variance ratios over the
    candidates, a black triangle above a fixed selection. Once every vector is fixed (one-hot), a compact strip
    instead: one cell per layer and vector, coloured by the chosen normalizer."""
    plt = _pyplot()
    if not rows:
        raise ValueError("no SN/SSN layers to chart")
    rows = forward_order(rows)
    stages = [stage_of(r["name"]) for r in rows]
    candidates = list(dict.fromkeys(c for r in rows for c in r["candidates"]))
    width = max(8.0, 0.16 * len(rows) + 2)
    x = list(range(len(rows)))
    if all(_fixed(r, v) is not None for r in rows for v in ("mean", "var")):
        fig, ax = plt.subplots(figsize=(width, 2.6))
        for y, vector in enumerate(("var", "mean")):
            ax.bar(x, [0.9] * len(rows), bottom=y + 0.05, width=1.0, edgecolor="white", linewidth=0.3,
                   color=[COLOURS.get(_fixed(r, vector), "#999999") for r in rows])
        ax.set_yticks([0.5, 1.5])
        ax.set_yticklabels(["variance", "mean"])
        ax.set_ylim(0, 2)
        _mark_stages(ax, stages, 2.02)
        handles = [plt.Rectangle((0, 0), 1, 1, color=COLOURS.get(c, "#999999")) for c in candidates]
        ax.legend(handles, candidates, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, title="chosen")
        axes = [ax]
        heading = f"every selection fixed (one-hot) in {len(rows)} layers"
    else:
        fig, axes = plt.subplots(2, 1, figsize=(width, 6.4), sharex=True)
        for ax, vector in zip(axes, ("mean", "var")):
            bottom = [0.0] * len(rows)
            for candidate in candidates:
                heights = [r[f"{vector}_ratios"][r["candidates"].index(candidate)] if candidate in r["candidates"]
                           else 0.0 for r in rows]
                ax.bar(x, heights, bottom=bottom, width=0.85, color=COLOURS.get(candidate, "#999999"),
                       label=candidate)
                bottom = [b + h for b, h in zip(bottom, heights)]
            fixed = [i for i, r in enumerate(rows) if _fixed(r, vector) is not None]
            if fixed:
                ax.scatter(fixed, [1.04] * len(fixed), marker="v", color="black", s=10, label="fixed", clip_on=False)
            ax.set_ylim(0, 1.08)
            ax.set_ylabel(f"{'mean' if vector == 'mean' else 'variance'} ratio (0-1)")
            ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8)  # outside: bars reach 1
            _mark_stages(ax, stages, 1.1)
        heading = f"normalizer ratios of {len(rows)} layers"
    axes[-1].set_xticks(x)
    axes[-1].set_xticklabels([r["name"] for r in rows], rotation=90, fontsize=6)
    axes[-1].set_xlabel("layer, in forward order (dotted lines: stage boundaries)")
    axes[-1].set_xlim(-0.5, len(rows) - 0.5)
    axes[0].set_title(f"{title}: {heading}" if title else heading, pad=16)
    return _png(fig)


def stage_share_chart(rows: Sequence[dict], title: str = "") -> bytes:
    """The share of layers per stage whose mean / variance use each normalizer (fixed, else largest ratio)."""
    plt = _pyplot()
    if not rows:
        raise ValueError("no SN/SSN layers to chart")
    stages = list(dict.fromkeys(stage_of(r["name"]) for r in forward_order(rows)))
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
        ax.set_title("mean" if vector == "mean" else "variance")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        ax.set_xlabel("stage, in forward order")
    axes[0].set_ylabel("share of the stage's layers (0-1)")
    axes[1].legend(loc="upper right", fontsize=8)
    fig.suptitle(title or "normalizer per stage")
    return _png(fig)


def trajectory_chart(ratios: Dict[Tuple[str, str], List[Tuple[int, float]]],
                     one_hot: List[Tuple[int, float]], title: str = "") -> bytes:
    """Over the iterations: each candidate's ratio averaged over layers, the mean's and the variance's in panels
    of their own, and the number of one-hot vectors below; markers on every point of a short run."""
    plt = _pyplot()
    if not ratios and not one_hot:
        raise ValueError("the run logged no ratio or one-hot scalars")
    panels = [v for v in ("mean", "var") if any(vector == v for vector, _ in ratios)] + (["one-hot"] if one_hot else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.4 * len(panels) + 0.6), sharex=True, squeeze=False)
    axes = [a[0] for a in axes]
    for ax, panel in zip(axes, panels):
        if panel == "one-hot":
            steps, values = zip(*one_hot)
            ax.plot(steps, values, color="black", linewidth=1.2, marker="o" if len(steps) < 40 else None,
                    markersize=3)
            ax.set_ylabel("one-hot vectors\n(count)")
            continue
        for (vector, candidate), points in sorted(ratios.items()):
            if vector != panel:
                continue
            steps, values = zip(*points)
            ax.plot(steps, values, color=COLOURS.get(candidate, "#999999"), linewidth=1.5,
                    marker="o" if len(steps) < 40 else None, markersize=3, label=candidate)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(f"{'mean' if panel == 'mean' else 'variance'} ratio\n(average over layers, 0-1)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("training iteration")
    axes[-1].xaxis.set_major_locator(_pyplot().MaxNLocator(integer=True))
    axes[0].set_title(title or "ratio trajectories")
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
    ax.set_xlabel("images per GPU (log scale)")
    ax.set_ylabel(f"{metric} (%)")
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
