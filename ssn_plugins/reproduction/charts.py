"""The reproduction toolkit's charts: ratio trajectories over a run, a metric by batch size, and the per-run set
written by ``ssn-analyze-selection``; the per-layer charts come from the library (:mod:`ssn_plugins.selection_plots`).
Every function returns PNG bytes.
"""
from typing import Dict, List, Optional, Sequence, Tuple

from ..functional.candidates import colour
from ..selection_plots import _png, _pyplot, layer_ratio_chart, stage_share_chart


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
            ax.plot(steps, values, color=colour(candidate), linewidth=1.5,
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
