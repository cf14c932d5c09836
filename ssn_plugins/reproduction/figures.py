"""The papers' figures (``paper_figures.yaml``) as rows, and their Markdown tables."""
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

FIGURES_FILE = Path(__file__).with_name("paper_figures.yaml")

#: the fields every table of the data file must have
TABLE_FIELDS = ("id", "title", "task", "dataset", "model", "metrics", "pivot", "figures")


@dataclass(frozen=True)
class PaperFigure:
    """One published number: ``value`` of ``metric`` for ``norm`` in table ``table``."""
    table: str
    task: str
    dataset: str
    model: str
    norm: str
    label: str
    batch: Tuple[Optional[int], Optional[int]]   # (GPUs, images per GPU); None where the source does not say
    metric: str
    value: float
    source: str
    pretrain: Optional[Tuple[int, int]] = None
    extra: Dict[str, str] = field(default_factory=dict, compare=False, hash=False)


#: norms without a published downstream figure, compared with the one the SSN paper reports them at or above
REFERENCE_NORM = {"SSN": "SN", "SyncSSN": "SyncSN"}


def figure_id(figure: PaperFigure) -> str:
    """The name a run record gives the figure its run is compared with: ``TABLE: LABEL @ BATCH``."""
    return f"{figure.table}: {figure.label} @ {format_batch(figure.batch)}"


def figures_with_id(name: str) -> Dict[str, PaperFigure]:
    """The figures (one per metric) that :func:`figure_id` calls ``name``; a ``KeyError`` for an unknown name."""
    found = {f.metric: f for f in paper_figures() if figure_id(f) == name}
    if not found:
        raise KeyError(f"no paper figure {name!r} in {FIGURES_FILE.name}")
    return found


def suite_figure(suite: str, norm: str, batch: Tuple[Optional[int], Optional[int]]) -> Optional[PaperFigure]:
    """The figure a run of ``suite`` (the tables' ``suite:`` key) with this norm (the papers' name) and intended
    batch setting is compared with: its norm's, else its reference norm's; ``None`` when no table or no single
    figure fits (a ``ValueError`` when several do)."""
    tables = {t["id"] for t in load_tables() if t.get("suite") == suite}
    for wanted in (norm, REFERENCE_NORM.get(norm)):
        found = {figure_id(f) for f in paper_figures() if f.table in tables and f.norm == wanted
                 and all(a is None or b is None or a == b for a, b in zip(f.batch, batch))}
        if len(found) > 1:
            raise ValueError(f"suite {suite!r}: {norm} at {format_batch(batch)} fits several figures: {sorted(found)}")
        if found:
            return next(iter(figures_with_id(found.pop()).values()))
    return None


def release_figure(weights: str, dataset: str, metric: str) -> Optional[PaperFigure]:
    """The release's own figure for a test of a released trained model (``weights`` = ``ssn://[LAYOUT/]NAME``)
    on the data set the release measured it on, or ``None``."""
    from ..model_zoo import SCHEME, find_entry

    entry = find_entry(weights)
    if entry is None or metric not in entry.results or entry.test.get("dataset", "").lower() != dataset.lower():
        return None
    a = entry.architecture
    return PaperFigure(table=f"{entry.release}:{entry.name}", task=entry.task, dataset=entry.test["dataset"],
                       model=trained_model_name(entry), norm=a["norm"], label=f"{SCHEME}{entry.name}",
                       batch=(None, None), metric=metric, value=float(entry.results[metric]),
                       source=f"{entry.release} release")


def trained_model_name(entry) -> str:
    """A trained model of the catalogue by its tables' name: ``Mask R-CNN R50-FPN``, ``c1_bilinear_deepsup R50-D8``."""
    a = entry.architecture
    if entry.task == "detection":
        return ("Mask R-CNN" if a.get("mask_head") else "Faster R-CNN") + f" R{a['depth']}-{a['body']}"
    return f"{a['decoder']} R{a['depth']}-D8"


def format_batch(batch: Sequence[Optional[int]]) -> str:
    gpus, per_gpu = batch
    if gpus is None and per_gpu is None:
        return "–"
    if gpus is None:
        return f"{per_gpu} per GPU"
    return f"({gpus},{per_gpu})"


@functools.lru_cache(maxsize=None)
def _load(path: str) -> dict:
    import yaml
    with open(path) as f:
        data = yaml.safe_load(f)
    sources = data.get("sources", {})
    for table in data.get("tables", []):
        missing = [k for k in TABLE_FIELDS if k not in table]
        if missing:
            raise ValueError(f"{path}: table {table.get('id', '?')!r} lacks {missing}")
        if table["pivot"] not in ("batch", "metric"):
            raise ValueError(f"{path}: table {table['id']!r}: pivot must be 'batch' or 'metric'")
        for fig in table["figures"]:
            if fig.get("source") not in sources:
                raise ValueError(f"{path}: table {table['id']!r}: unknown source {fig.get('source')!r}")
            if not any(m in fig for m in table["metrics"]):
                raise ValueError(f"{path}: table {table['id']!r}: a figure for {fig.get('norm')!r} has no metric")
    return data


def load_tables(path: Path = FIGURES_FILE) -> List[dict]:
    """The data file's tables, as written (each with its ``figures``)."""
    return _load(str(path))["tables"]


def load_sources(path: Path = FIGURES_FILE) -> Dict[str, str]:
    return _load(str(path))["sources"]


def source_url(source: str, path: Path = FIGURES_FILE) -> str:
    """Where ``source`` (a key of the data file's ``sources``) can be read."""
    return _load(str(path)).get("source_urls", {})[source]


def paper_figures(path: Path = FIGURES_FILE) -> List[PaperFigure]:
    """Every figure of the data file, one row per (table, norm, batch, metric)."""
    rows = []
    for table in load_tables(path):
        for fig in table["figures"]:
            for metric in table["metrics"]:
                if metric not in fig:
                    continue
                rows.append(PaperFigure(
                    table=table["id"], task=table["task"], dataset=table["dataset"], model=table["model"],
                    norm=fig["norm"], label=fig.get("label", fig["norm"]), batch=tuple(fig["batch"]),
                    metric=metric, value=float(fig[metric]), source=fig["source"],
                    pretrain=tuple(fig["pretrain"]) if "pretrain" in fig else None,
                    extra={k: str(v) for k, v in fig.items() if k in ("note", "md5")}))
    return rows


def value_text(value: float) -> str:
    # as printed in the sources: one decimal for the papers, two for the releases
    return f"{value:.2f}" if round(value, 1) != value else f"{value:.1f}"


def table_markdown(table: dict) -> str:
    """One table of the data file as Markdown: norms as rows, batch settings or metrics as columns."""
    figures = table["figures"]
    if table["pivot"] == "batch":
        metric = table["metrics"][0]
        columns = list(dict.fromkeys(format_batch(f["batch"]) for f in figures))
        rows = list(dict.fromkeys(f.get("label", f["norm"]) for f in figures))
        cells = {(f.get("label", f["norm"]), format_batch(f["batch"])): f[metric] for f in figures}
        lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for row in rows:
            lines.append(f"| {row} | " + " | ".join(
                value_text(cells[(row, c)]) if (row, c) in cells else "–" for c in columns) + " |")
        return "\n".join(lines)
    extras = [k for k in ("md5",) if any(k in f for f in figures)]
    header = ["norm", "batch", *table["metrics"], "source", *extras]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for f in figures:
        values = [value_text(f[m]) + ("*" if m != table["metrics"][0] and "note" in f else "") if m in f else "–"
                  for m in table["metrics"]]
        label = f.get("label", f["norm"])
        lines.append("| " + " | ".join([label, format_batch(f["batch"]), *values, f["source"],
                                         *(f.get(k, "") for k in extras)]) + " |")
    notes = [f"\\* {f['note']}" for f in figures if "note" in f and table["pivot"] == "metric"
             and len(table["metrics"]) > 1]
    return "\n".join(lines + ([""] + notes if notes else []))


def downstream_markdown(tables: List[dict]) -> str:
    """The downstream summary of MODEL_ZOO.md: task, the papers' figures on one line, the configs that run them."""
    lines = ["| task | papers' figure | config |", "|---|---|---|"]
    for table in tables:
        if table["task"] == "classification":
            continue
        figures = ", ".join(
            f"{f.get('label', f['norm'])} " + " / ".join(value_text(f[m]) for m in table["metrics"] if m in f)
            for f in table["figures"])
        lines.append(f"| {table['title']} | {figures} | {table.get('configs', '–')} |")
    return "\n".join(lines)


def paper_markdown(path: Path = FIGURES_FILE) -> str:
    """Every table of the data file, grouped by task, with its sources: ``leaderboard.py --paper``."""
    tables, sources = load_tables(path), load_sources(path)
    out = ["# The papers' figures", ""]
    for task in dict.fromkeys(t["task"] for t in tables):
        out += [f"## {task}", ""]
        for table in (t for t in tables if t["task"] == task):
            out += [f"### {table['title']}", "", table_markdown(table), ""]
    out += ["## Sources", ""] + [f"- **{key}**: {text}" for key, text in sources.items()]
    return "\n".join(out) + "\n"


def generated_blocks(path: Path = FIGURES_FILE) -> Dict[str, str]:
    """The blocks of MODEL_ZOO.md written from the data file, by block name."""
    tables = {t["id"]: t for t in load_tables(path)}
    return {
        "imagenet-r50-batch-sizes": table_markdown(tables["imagenet-r50-batch-sizes"]),
        "downstream": downstream_markdown(list(tables.values())),
    }


def _link(text: str) -> str:
    """A catalogue ``by_hand`` entry (a URL, maybe followed by a note such as a pin) as a Markdown link."""
    url, _, note = text.partition(" ")
    host = {"drive.google.com": "Google Drive", "pan.baidu.com": "Baidu Pan"}.get(url.split("/")[2], None) \
        if "://" in url else None
    return f"[{host or url}]({url})" + (f" {note}" if note else "") if host else f"`{url}`"


def catalogue_markdown() -> str:
    """MODEL_ZOO.md's table of the ``ssn://`` catalogue (``ssn_plugins/model_zoo.json``)."""
    from ..model_zoo import catalogue

    lines = ["| name | release | model | batch | top-1 / top-5 | checksum | the release's links |",
             "|---|---|---|---|---|---|---|"]
    for e in catalogue().values():
        if e.task != "classification":
            continue
        a = e.architecture
        model = f"ResNet-{a['depth']}" + (" v2" if a.get("version", 1) == 2 else "") + f", {a['norm']}" \
            + (" + CE" if a.get("ce") else "") + (" (IN, LN)" if a.get("candidates") == ["IN", "LN"] else "")
        figures = f"{e.top1} / {e.top5}" if e.top1 is not None else "–"
        lines.append(f"| `ssn://{e.name}` | {e.release} | {model} | {e.batch or '–'} | {figures} | {_checksum(e)} | "
                     + " · ".join(_link(x) for x in e.by_hand) + " |")
    entries = [e for e in catalogue().values() if e.task == "classification"]
    notes = [f"- `{e.name}`: {e.note}" for e in entries if e.note] + _licence_notes(entries)
    return "\n".join(lines + [""] + notes)


def trained_models_markdown() -> str:
    """MODEL_ZOO.md's table of the catalogue's trained downstream models, with the release's figures."""
    from ..model_zoo import catalogue

    lines = ["| name | task | model | norm | batch | the release's figures | config | checksum | the release's links |",
             "|---|---|---|---|---|---|---|---|---|"]
    entries = [e for e in catalogue().values() if e.task != "classification"]
    for e in entries:
        a = e.architecture
        norm = f"{a['norm']} over {', '.join(a['candidates'])}"
        figures = ", ".join(f"{metric} {value:.2f}" for metric, value in e.results.items())  # as printed
        lines.append(f"| `ssn://{e.name}` | {e.task} | {trained_model_name(e)} | {norm} | {e.batch} | {figures} | "
                     f"`{e.config}` | {_checksum(e)} | " + " · ".join(_link(x) for x in e.by_hand) + " |")
    notes = [f"- `{e.name}`: {e.note}" for e in entries if e.note] + _licence_notes(entries)
    return "\n".join(lines + [""] + notes)


def _licence_notes(entries) -> List[str]:
    """One line per release: its licence as it states it (downloads print it once too)."""
    releases = {}
    for e in entries:
        releases.setdefault(e.release, e.licence)
    return [f"- The {release} release's licence: {licence or 'not stated'}" for release, licence in releases.items()]


def _checksum(e) -> str:
    return (f"MD5 `{e.md5}`" if e.md5 else f"SHA-256 `{e.sha256_prefix}…`" if e.sha256_prefix
            else "none published")


def catalogue_blocks() -> Dict[str, str]:
    """The blocks of MODEL_ZOO.md written from the model-zoo catalogue."""
    return {"catalogue": catalogue_markdown(), "trained models": trained_models_markdown()}


BEGIN = "<!-- generated from ssn_plugins/reproduction/paper_figures.yaml: {} -->"
CATALOGUE_BEGIN = "<!-- generated from ssn_plugins/model_zoo.json: {} -->"
END = "<!-- end of generated block -->"


def update_markdown(text: str, blocks: Dict[str, str], begin_line: str = BEGIN) -> str:
    """``text`` with each generated block (between its ``begin_line`` and the next END line) replaced."""
    for name, body in blocks.items():
        begin = begin_line.format(name)
        start = text.find(begin)
        if start < 0:
            raise ValueError(f"no {begin!r} line to update")
        stop = text.find(END, start)
        if stop < 0:
            raise ValueError(f"the block {name!r} has no {END!r} line")
        text = text[:start] + begin + "\n" + body + "\n" + text[stop:]
    return text
