"""Runs beside the papers' figures: matching, the per-run rows, and Markdown / CSV / HTML output."""
import base64
import csv
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .figures import REFERENCE_NORM, PaperFigure, figures_with_id, format_batch, paper_figures, release_figure
from .runs import FINISHED, Run

#: a run reproduces a figure when it is within this many points of it, either way (detectron2's
#: ``verify_results`` rule; the configs' ``TEST.EXPECTED_RESULTS`` use the same tolerance)
DEFAULT_TOLERANCE = 0.5


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


def setting_differences(run: Run, figure: PaperFigure) -> List[str]:
    """How the run's setting differs from the one ``figure`` was measured at: GPUs, images per GPU, the
    pretrained weights' batch setting, the model (architecture and schedule). Empty: comparable.

    A release's own figure, beside a test of the release's own weights, is always comparable."""
    if figure.source.endswith(" release") and run.tested_weights:
        return []
    found = []
    settings = run.settings or [run.batch]
    if len(settings) > 1:
        found.append("resumed with another setting: " + ", then ".join(format_batch(s) for s in settings))
    for (ours, theirs), what in zip(zip(run.batch, figure.batch), ("GPUs", "images per GPU")):
        if theirs is not None and ours != theirs:
            found.append(f"{what}: {'not recorded' if ours is None else ours} here, {theirs} in the figure")
    if figure.pretrain is not None and run.pretrain_setting != figure.pretrain:
        ours = format_batch(run.pretrain_setting) if run.pretrain_setting else \
            f"{run.pretrained or 'nothing'}, of no known setting"
        found.append(f"pretrained: {ours} here, {format_batch(figure.pretrain)} in the figure")
    if run.model != figure.model:
        found.append(f"model: {run.model} here, {figure.model} in the figure")
    return found


@dataclass
class Row:
    run: Run
    evaluation: str
    results: Dict[str, float]
    paper: Dict[str, PaperFigure] = field(default_factory=dict)
    #: per metric, how the run's setting differs from its figure's (see :func:`setting_differences`)
    not_comparable: Dict[str, List[str]] = field(default_factory=dict)
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


def verdict(diff: Optional[float], tolerance: float, differences: Sequence[str] = ()) -> str:
    """``yes`` within the tolerance, else ``above`` / ``below`` the paper; ``not comparable (...)`` when the
    run's setting differs from the figure's; ``–`` without a comparison."""
    if diff is None or math.isnan(diff):
        return "–"
    if differences:
        return "not comparable (" + "; ".join(differences) + ")"
    return "yes" if abs(diff) <= tolerance else ("above" if diff > 0 else "below")


#: the readers' way to full unpickling
READER_TRUST = "only if you trust where the file came from, pass --trust-pickle (tools/leaderboard.py, " \
               "tools/analyze_selection.py)"


def checkpoint_selection_rows(checkpoint: Path, trust_pickle: bool = False) -> List[dict]:
    """``describe_state_dict`` rows of a checkpoint of any of our tools (detectron2 ``model``, mmengine
    ``state_dict``, a bare state dict).

    Read weights-only (mmengine's own checkpoint objects allow-listed when mmengine is installed), as run folders
    are often shared: a file that holds other objects raises a ``ConversionError`` naming what it imports and
    the ``--trust-pickle`` flag, which ``trust_pickle`` is.
    """
    import importlib.util

    from ..checkpoints import load_checkpoint_file
    from ..selection import describe_state_dict
    if not trust_pickle and importlib.util.find_spec("mmengine") is not None:
        from ..openmmlab.checkpoint import allow_mmengine_checkpoints
        allow_mmengine_checkpoints()
    state = load_checkpoint_file(checkpoint, trust_pickle, READER_TRUST)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ValueError(f"{checkpoint} holds a {type(state).__name__}, not a state dict (nor one under 'model' or "
                         f"'state_dict')")
    return describe_state_dict(state)


def selection_counts(rows: List[dict]) -> Dict[str, Dict[str, int]]:
    """``count_selections`` of ``describe_state_dict`` rows, with the number of SN and SSN layers."""
    from ..selection import count_selections
    counts = count_selections(rows)
    counts["layers"] = {"SN": sum(r["type"] == "SwitchNorm" for r in rows),
                        "SSN": sum(r["type"] == "SparseSwitchNorm" for r in rows)}
    return counts


def build_rows(runs: Sequence[Run], pick: str = "final", figures: Optional[Sequence[PaperFigure]] = None,
               with_selection: bool = True, trust_pickle: bool = False) -> List[Row]:
    figures = paper_figures() if figures is None else figures
    rows = []
    for run in runs:
        label, results, tested = run.results(pick)
        row = Row(run, label, results)
        named = (run.record or {}).get("figure")
        try:
            named_figures = figures_with_id(named) if named else {}
        except KeyError:  # the data file changed since the run was launched: say so, compare with nothing
            named_figures = {}
            run.problem = "; ".join(filter(None, [
                run.problem, f"its run record names the figure {named!r}, which paper_figures.yaml no longer has"]))
        for metric in results:
            figure = None
            if tested:  # a released trained model is compared with its release's own figure
                figure = release_figure(run.tested_weights, run.dataset, metric)
            if figure is None and named:  # the figure tools/reproduce.py launched the run for
                figure = named_figures.get(metric)
            elif figure is None:  # a run without a record: the figure its description matches
                figure = match_figure(figures, run.task, run.dataset, run.model, run.norm, run.batch, metric)
            if figure is not None:
                row.paper[metric] = figure
                differences = setting_differences(run, figure)
                if differences:
                    row.not_comparable[metric] = differences
        if with_selection and run.checkpoint is not None:
            try:
                row.layers = checkpoint_selection_rows(run.checkpoint, trust_pickle)
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


COLUMNS = ("run", "tool", "status", "task", "dataset", "model", "norm", "batch", "pretrained", "evaluation", "metric",
           "ours", "paper", "paper norm", "difference", "reproduced", "selection", "described by", "source")
#: what each column says, for the HTML page's legend
COLUMN_MEANINGS = {
    "run": "the run's folder", "tool": "the tool that ran it", "status": "finished, partial (and why), unreadable "
    "or missing", "task": "the papers' task", "dataset": "the data set the metrics are measured on",
    "model": "architecture and schedule", "norm": "the norm layers (backbone, then heads where they differ)",
    "batch": "(GPUs, images per GPU) it trained with; for a released model tested here, the release's",
    "pretrained": "the weights training started from", "evaluation": "which evaluation the row reports (the last "
    "validation, or --pick best) and whether a test run is included", "metric": "the papers' metric name",
    "ours": "this run's value", "paper": "the figure it is compared with", "paper norm": "the figure's norm as the "
    "paper writes it (SSN has no published downstream figure: SN's)", "difference": "ours minus paper, in points",
    "reproduced": "yes within the tolerance, else above / below; not comparable when the setting differs (listed)",
    "selection": "how many SSN mean / variance vectors of the last checkpoint chose IN / LN / BN",
    "described by": "run record: the tool wrote what ran; inferred: read from the config afterwards (another "
    "tool's run)", "source": "the paper or release the figure is from"}


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
                "pretrained": run.pretrained or "–", "evaluation": row.evaluation,
                "selection": format_selection_counts(row.selection, row.selection_problem),
                "described by": run.described}
        # the paper table the row is compared with, for the HTML page's grouping
        tables = [f.table for f in row.paper.values()] or [(run.record or {}).get("table") or ""]
        base["table"] = tables[0]
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
                            "reproduced": verdict(diff, tolerance, row.not_comparable.get(metric, ()))
                            if run.status == FINISHED else "–",
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


def _table_title(table: str) -> str:
    from .figures import load_tables
    titles = {t["id"]: t["title"] for t in load_tables()}
    if table in titles:
        return f"{titles[table]} ({table})"
    if ":" in table:  # a release's own figures: RELEASE:NAME
        release, _, name = table.partition(":")
        return f"The {release} release's trained model ssn://{name}, tested"
    return "Runs without a paper figure"


def to_html(records: Sequence[dict], charts: Sequence[Tuple[str, bytes]] = (), title: str = "ssn_plugins leaderboard",
            columns: Sequence[str] = COLUMNS, generated: Optional[Dict[str, str]] = None) -> str:
    """One self-contained page: when and from which commit it was generated, what each column means, the rows
    grouped by the paper table they are compared with, then each chart as an inline PNG (no external file or
    script). ``generated``: ``{"date": ..., "commit": ..., "folders": ...}``."""
    head = "".join(f"<th title=\"{html.escape(COLUMN_MEANINGS.get(c, ''))}\">{html.escape(c)}</th>" for c in columns)

    def cell(r: dict, c: str) -> str:
        value = str(r[c])
        kind = value.split(" (")[0].replace(" ", "-")  # "not comparable (...)" -> class "not-comparable"
        return f"<td class=\"{html.escape(c.replace(' ', '-'))} {html.escape(kind)}\">{html.escape(value)}</td>"

    groups: Dict[str, List[dict]] = {}
    for r in records:
        groups.setdefault(r.get("table", ""), []).append(r)
    order = sorted(groups, key=lambda t: (t == "", ":" in t, t))  # paper tables, then releases, then the rest
    tables = "".join(
        f"<section class=\"group\"><h2>{html.escape(_table_title(t))}</h2><table class=\"leaderboard\">"
        f"<thead><tr>{head}</tr></thead><tbody>"
        + "".join("<tr>" + "".join(cell(r, c) for c in columns) + "</tr>" for r in groups[t])
        + "</tbody></table></section>" for t in order)
    about = generated or {}
    stamp = " · ".join(f"{html.escape(k)}: <code>{html.escape(str(v))}</code>" for k, v in about.items())
    legend = "".join(f"<dt>{html.escape(c)}</dt><dd>{html.escape(COLUMN_MEANINGS[c])}</dd>" for c in columns
                     if c in COLUMN_MEANINGS)
    figures = "".join(
        f"<figure><img alt=\"{html.escape(name)}\" src=\"data:image/png;base64,{base64.b64encode(png).decode()}\">"
        f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, png in charts)
    style = ("body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse;font-size:13px}"
             "th,td{border:1px solid #bbb;padding:3px 6px;text-align:left} th{background:#eee}"
             "td.reproduced.yes{background:#d4f4d4} td.reproduced.below{background:#f8d4d4}"
             "td.reproduced.above{background:#d4e4f8} td.reproduced.not-comparable{background:#eeeeee;color:#555}"
             "p.generated{color:#444} dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;"
             "font-size:13px} dt{font-weight:bold} dd{margin:0}"
             "figure{display:inline-block;margin:1em} img{max-width:900px}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class=\"generated\" id=\"generated\">{stamp}</p>"
            f"<div id=\"leaderboard\">{tables}</div>"
            f"<details open id=\"columns\"><summary>What the columns mean</summary><dl>{legend}</dl></details>"
            f"<div id=\"charts\">{figures}</div>"
            # marks how many charts the browser decoded, for the headless check
            "<script>window.addEventListener('load',function(){document.body.setAttribute('data-images-loaded',"
            "Array.prototype.filter.call(document.images,function(i){return i.complete&&i.naturalWidth>0})"
            ".length)})</script></body></html>\n")
