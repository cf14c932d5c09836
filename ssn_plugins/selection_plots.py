"""matplotlib charts of which normalizer each layer chose (the SN/SSN papers' per-layer figures), as PNG bytes.

The training hooks of both adapters log :func:`layer_ratio_chart`; the reproduction toolkit adds the run-level
charts (:mod:`ssn_plugins.reproduction.charts`). Nothing is shown on screen (the Agg backend). Colours come from
the candidate table (:func:`ssn_plugins.functional.candidates.colour`), the same in every chart.
"""
import io
import re
from typing import List, Optional, Sequence, Tuple

from .functional.candidates import colour

__all__ = ["layer_ratio_chart", "stage_share_chart", "png_to_rgb", "stage_of", "forward_order", "chosen",
]


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
                   color=[colour(_fixed(r, vector)) for r in rows])
        ax.set_yticks([0.5, 1.5])
        ax.set_yticklabels(["variance", "mean"])
        ax.set_ylim(0, 2)
        _mark_stages(ax, stages, 2.02)
        handles = [plt.Rectangle((0, 0), 1, 1, color=colour(c)) for c in candidates]
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
                ax.bar(x, heights, bottom=bottom, width=0.85, color=colour(candidate),
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
            ax.bar(stages, shares, bottom=bottom, color=colour(candidate), label=candidate)
            bottom = [b + s for b, s in zip(bottom, shares)]
        ax.set_title("mean" if vector == "mean" else "variance")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        ax.set_xlabel("stage, in forward order")
    axes[0].set_ylabel("share of the stage's layers (0-1)")
    axes[1].legend(loc="upper right", fontsize=8)
    fig.suptitle(title or "normalizer per stage")
    return _png(fig)
