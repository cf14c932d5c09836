"""Runs beside the papers' figures: matching, the per-run rows, and Markdown / CSV / HTML output."""
import base64
import csv
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .figures import PaperFigure, format_batch, paper_figures, release_figure
from .runs import FINISHED, Run

#: a run reproduces a figure when it is within this many points of it, either way (detectron2's
#: ``verify_results`` rule; the configs' ``TEST.EXPECTED_RESULTS`` use the same tolerance)
DEFAULT_TOLERANCE = 0.5
#: norms without a published downstream figure, compared with the one the SSN paper reports them at or above
REFERENCE_NORM = {"SSN": "SN", "SyncSSN": "SyncSN"}


def _same(a: Optional[int], b: Optional[int]) -> bool:
    return a is None or b is None or a == b


def match_figure(figures: Sequence[PaperFigure], task: str, dataset: str, model: str, norm: str,
                 batch: Tuple[Optional[int], Optional[int]], metric: str,
                 reference: bool = True) -> Optional[PaperFigure]:
    """The paper figure for a run (or config) with these properties, or ``None``.

    Task, dataset (case-insensitive), model, metric and norm must agree, and the batch setting wherever both
    sides state it. SSN / SyncSSN fall back to SN's / SyncSN's figure (the SSN paper reports SSN at or above
    SN; the row says which norm's figure it shows) unless ``reference`` is false. Paper tables win over the
    authors' release tables.
    """
    for wanted in (norm, REFERENCE_NORM.get(norm) if reference else None):
        if wanted is None:
            continue
        found = [f for f in figures
                 if f.task == task and f.dataset.lower() == dataset.lower() and f.model == model
                 and f.metric == metric and f.norm == wanted
                 and _same(f.batch[0], batch[0]) and _same(f.batch[1], batch[1])]
        if found:
            return sorted(found, key=lambda f: f.source.endswith("release"))[0]
    return None


@dataclass
class Row:
    run: Run
    evaluation: str
    results: Dict[str, float]
    paper: Dict[str, PaperFigure] = field(default_factory=dict)
    layers: Optional[List[dict]] = None   # describe_state_dict rows of the run's checkpoint, when read
    selection_problem: str = ""

    @property
    def selection(self) -> Optional[Dict[str, Dict[str, int]]]:
        """How many SSN mean / variance vectors chose each candidate, and how many SN / SSN layers there are."""
        return None if self.layers is None else selection_counts(self.layers)

    def difference(self, metric: str) -> Optional[float]:
        if metric not in self.paper or metric not in self.results:
            return None
        return self.results[metric] - self.paper[metric].value


def verdict(diff: Optional[float], tolerance: float) -> str:
    """``yes`` within the tolerance, else ``above`` / ``below`` the paper; ``–`` without a comparison."""
    if diff is None or math.isnan(diff):
        return "–"
    return "yes" if abs(diff) <= tolerance else ("above" if diff > 0 else "below")


def checkpoint_selection_rows(checkpoint: Path) -> List[dict]:
    """``describe_state_dict`` rows of a checkpoint of any of our tools (detectron2 ``model``, mmengine
    ``state_dict``, a bare state dict)."""
    import torch
    from ..selection import describe_state_dict
    # the run's own files, found in the user's work folders; mmengine's need full unpickling on torch >= 2.6
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    return describe_state_dict(state)


def selection_counts(rows: List[dict]) -> Dict[str, Dict[str, int]]:
    """``count_selections`` of ``describe_state_dict`` rows, with the number of SN and SSN layers."""
    from ..selection import count_selections
    counts = count_selections(rows)
    counts["layers"] = {"SN": sum(r["type"] == "SwitchNorm" for r in rows),
                        "SSN": sum(r["type"] == "SparseSwitchNorm" for r in rows)}
    return counts


def build_rows(runs: Sequence[Run], pick: str = "final", figures: Optional[Sequence[PaperFigure]] = None,
               with_selection: bool = True) -> List[Row]:
    figures = paper_figures() if figures is None else figures
    rows = []
    for run in runs:
        label, results, tested = run.results(pick)
        row = Row(run, label, results)
        for metric in results:
            figure = None
            if tested:  # a released trained model is compared with its release's own figure
                figure = release_figure(run.tested_weights, run.dataset, metric)
            if figure is None:
                figure = match_figure(figures, run.task, run.dataset, run.model, run.norm, run.batch, metric)
            if figure is not None:
                row.paper[metric] = figure
        if with_selection and run.checkpoint is not None:
            try:
                row.layers = checkpoint_selection_rows(run.checkpoint)
            except Exception as e:  # an unreadable checkpoint is reported on its row, not raised
                row.selection_problem = f"{run.checkpoint.name}: {type(e).__name__}: {e}"
        rows.append(row)
    return rows


def _fmt(value: Optional[float]) -> str:
    return "–" if value is None else ("nan" if math.isnan(value) else f"{value:.2f}")


def format_selection_counts(counts: Optional[Dict[str, Dict[str, int]]], problem: str = "") -> str:
    if problem:
        return f"unreadable ({problem})"
    if counts is None:
        return "–"
    if not counts["layers"]["SSN"]:
        return f"{counts['layers']['SN']} SN layers (soft)" if counts["layers"]["SN"] else "no SN/SSN layers"
    def text(vector: str) -> str:
        return " ".join(f"{k} {v}" for k, v in sorted(counts[vector].items()))
    return f"mean: {text('mean')}; var: {text('var')}"


COLUMNS = ("run", "tool", "status", "task", "dataset", "model", "norm", "batch", "evaluation", "metric", "ours",
           "paper", "paper norm", "difference", "reproduced", "selection", "source")


def table_records(rows: Sequence[Row], tolerance: float = DEFAULT_TOLERANCE, root: Optional[Path] = None) -> List[dict]:
    """One record per (run, metric); a run without results gets one record saying why."""
    records = []
    for row in rows:
        run = row.run
        path = run.path.resolve()
        name = str(path.relative_to(root)) if root and path.is_relative_to(root) else str(run.path)
        base = {"run": name, "tool": run.tool,
                "status": run.status + (f" ({run.problem})" if run.problem else ""), "task": run.task,
                "dataset": run.dataset, "model": run.model, "norm": run.norm, "batch": format_batch(run.batch),
                "evaluation": row.evaluation,
                "selection": format_selection_counts(row.selection, row.selection_problem)}
        if not row.results:
            records.append({**base, **{k: "–" for k in COLUMNS if k not in base}})
            continue
        for metric, value in row.results.items():
            figure = row.paper.get(metric)
            diff = row.difference(metric)
            records.append({**base, "metric": metric, "ours": _fmt(value),
                            "paper": _fmt(figure.value if figure else None),
                            "paper norm": figure.label if figure else "–",
                            "difference": "–" if diff is None else f"{diff:+.2f}",
                            "reproduced": verdict(diff, tolerance) if run.status == FINISHED else "–",
                            "source": figure.source if figure else "–"})
    return records


def to_markdown(records: Sequence[dict], columns: Sequence[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in records:
        lines.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def to_csv(records: Sequence[dict], columns: Sequence[str] = COLUMNS) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def to_html(records: Sequence[dict], charts: Sequence[Tuple[str, bytes]] = (), title: str = "ssn_plugins leaderboard",
            columns: Sequence[str] = COLUMNS) -> str:
    """One self-contained page: the table, then each chart as an inline PNG (no external file or script)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(
        f"<td class=\"{html.escape(c)} {html.escape(str(r[c]))}\">{html.escape(str(r[c]))}</td>" for c in columns)
        + "</tr>" for r in records)
    figures = "".join(
        f"<figure><img alt=\"{html.escape(name)}\" src=\"data:image/png;base64,{base64.b64encode(png).decode()}\">"
        f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, png in charts)
    style = ("body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse;font-size:13px}"
             "th,td{border:1px solid #bbb;padding:3px 6px;text-align:left} th{background:#eee}"
             "td.reproduced.yes{background:#d4f4d4} td.reproduced.below{background:#f8d4d4}"
             "td.reproduced.above{background:#d4e4f8}"
             "figure{display:inline-block;margin:1em} img{max-width:900px}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<table id=\"leaderboard\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"<div id=\"charts\">{figures}</div>"
            # marks how many charts the browser decoded, for the headless check
            "<script>window.addEventListener('load',function(){document.body.setAttribute('data-images-loaded',"
            "Array.prototype.filter.call(document.images,function(i){return i.complete&&i.naturalWidth>0})"
            ".length)})</script></body></html>\n")
