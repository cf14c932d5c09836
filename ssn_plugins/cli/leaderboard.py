"""The papers' tables, and runs of this project's tools set beside them.

    python tools/leaderboard.py --paper                          # the papers' figures (Markdown)
    python tools/leaderboard.py --paper --update                 # rewrite MODEL_ZOO.md's and the metafiles' tables
    python tools/leaderboard.py work_dirs/reproduce/coco-mask-rcnn-2x work_dirs/x [--format md|html|csv] [-o FILE]

For each WORK_DIR it finds the runs of tools/train_net.py and detectron2_real_mini.py (config.yaml,
metrics.json), of tools/mm_train.py / mm_test.py / openmmlab_real_mini.py (mmengine work dirs),
tools/pretrain_imagenet.py and train_fashion_mnist.py (config.json, metrics.json), in the folder or
below it. It reads task, data set, model, norm and batch setting from each run's own config, takes
the final evaluation (`--pick best`: the best), and prints one row per run and metric beside the
matching paper figure with the difference and whether it is within `--tolerance` (detectron2's
verify_results rule), plus how many SSN vectors of the run's last checkpoint chose IN / LN / BN.
Missing, unfinished and unreadable runs are listed with the reason. `--format html` writes one
self-contained page with the table and charts; `--screenshot PNG` photographs it with headless
Chromium. Checkpoints are read weights-only (mmengine's objects allow-listed): one that holds other objects
shows why on its row, and ``--trust-pickle`` reads such files with full unpickling (only for runs you trust).
"""
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

from ssn_plugins.cli import clone_root, tool_parser
from ssn_plugins.reproduction import figures as F
from ssn_plugins.reproduction.leaderboard import (DEFAULT_TOLERANCE, build_rows, table_records, to_csv, to_html,
                                                  to_markdown)
from ssn_plugins.reproduction.runs import FINISHED, MISSING, find_runs



def html_charts(rows):
    """Charts for the page: the metric against the batch when runs differ only in batch, and each finished
    run's per-layer selection."""
    from ssn_plugins.reproduction import charts
    out = []
    by_batch = {}
    for row in rows:
        if row.run.status == FINISHED and row.results and row.run.batch[1]:
            metric = next(iter(row.results))
            key = (row.run.task, row.run.dataset, row.run.model, metric)
            by_batch.setdefault(key, {}).setdefault(row.run.norm, []).append((row.run.batch[1], row.results[metric]))
    for (task, dataset, model, metric), points in by_batch.items():
        if len({b for values in points.values() for b, _ in values}) > 1:
            out.append((f"{dataset} {model}: {metric} by images per GPU",
                        charts.metric_by_batch_chart(points, metric, f"{dataset} {model}")))
    for row in rows:
        if row.layers:
            out.append((f"{row.run.path.name}: ratios per layer",
                        charts.layer_ratio_chart(row.layers, row.run.path.name)))
    return out


def collect_rows(work_dirs: Sequence[Path], pick: str = "final", with_selection: bool = True,
                 trust_pickle: bool = False):
    """The rows of every run in ``work_dirs`` (each checkpoint read once, weights-only unless ``trust_pickle``)."""
    runs = [run for folder in work_dirs for run in find_runs(Path(folder))]
    return build_rows(runs, pick, with_selection=with_selection, trust_pickle=trust_pickle)


def render(rows, work_dirs: Sequence[Path], fmt: str = "md", tolerance: float = DEFAULT_TOLERANCE,
           output: Optional[Path] = None) -> str:
    """The leaderboard of ``rows`` as Markdown, CSV or HTML (written to ``output`` when given)."""
    root = Path(work_dirs[0]).resolve().parent if len(work_dirs) == 1 else None
    records = table_records(rows, tolerance, root)
    if fmt == "md":
        text = to_markdown(records)
    elif fmt == "csv":
        text = to_csv(records)
    else:
        import datetime

        from ssn_plugins.run_record import current_commit
        generated = {"generated": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                     "ssn_plugins commit": current_commit(),
                     "from": ", ".join(str(Path(w).resolve()) for w in work_dirs)}
        text = to_html(records, html_charts(rows), generated=generated)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)
    return text


def update_generated_files() -> list:
    """The clone's MODEL_ZOO.md generated blocks and the OpenMMLab metafiles, from the papers' figures."""
    from ssn_plugins.reproduction.metafiles import write_metafiles
    repo = clone_root()
    if repo is None:
        raise SystemExit("leaderboard: --update rewrites a clone's MODEL_ZOO.md and metafiles; this ssn_plugins is "
                         "an installed copy (run it from a clone: python tools/leaderboard.py --paper --update)")
    zoo = repo / "MODEL_ZOO.md"
    text = F.update_markdown(zoo.read_text(), F.generated_blocks())
    zoo.write_text(F.update_markdown(text, F.catalogue_blocks(), F.CATALOGUE_BEGIN))
    return [zoo, *write_metafiles(repo / "configs")]


def main(argv=None):
    parser = tool_parser(__doc__, "leaderboard")
    parser.add_argument("work_dirs", nargs="*", type=Path)
    parser.add_argument("--paper", action="store_true", help="print the papers' figures")
    parser.add_argument("--update", action="store_true", help="with --paper: rewrite the files generated from them")
    parser.add_argument("--format", choices=("md", "html", "csv"), default="md")
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--pick", choices=("final", "best"), default="final",
                        help="which evaluation of each run (best: highest first metric)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--no-selection", action="store_true", help="do not read the runs' checkpoints")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="read checkpoints with full unpickling (only for runs you trust; default weights-only)")
    parser.add_argument("--screenshot", type=Path, help="with --format html: photograph the page (headless Chromium)")
    parser.add_argument("--charts", type=Path, help="also write the HTML page's charts as PNG files into this folder")
    parser.add_argument("--allow-missing", action="store_true",
                        help="exit 0 even when a folder does not exist or holds no run (its row says so either way)")
    args = parser.parse_args(argv)
    if args.paper and args.format != "md":
        parser.error("--paper prints the papers' tables as Markdown; --format html / csv is for run folders")
    if args.paper:
        if args.update:
            for path in update_generated_files():
                print(f"wrote {path}")
            return 0
        text = F.paper_markdown()
        if args.output:
            args.output.write_text(text)
        print(text, end="")
        return 0
    if not args.work_dirs:
        parser.error("give WORK_DIR(s), or --paper")
    if args.screenshot and (args.format != "html" or args.output is None):
        parser.error("--screenshot needs --format html and -o FILE")
    rows = collect_rows(args.work_dirs, args.pick, not args.no_selection, args.trust_pickle)
    text = render(rows, args.work_dirs, args.format, args.tolerance, args.output)
    if args.output is None:
        print(text, end="")
    else:
        print(f"wrote {args.output}")
    if args.charts:
        args.charts.mkdir(parents=True, exist_ok=True)
        for title, png in html_charts(rows):
            path = args.charts / (re.sub(r"[^A-Za-z0-9]+", "_", title).strip("_").lower() + ".png")
            path.write_bytes(png)
            print(f"wrote {path}")
    if args.screenshot:
        from ssn_plugins.reproduction.browser import screenshot
        print(f"wrote {screenshot(args.output, args.screenshot)}")
    missing = [f"{row.run.path}: {row.run.problem}" for row in rows if row.run.status == MISSING]
    if missing and not args.allow_missing:  # a wrong path in a CI job must not pass as an empty table
        print("\n".join(["leaderboard: nothing to read in", *missing, "(--allow-missing to accept)"]),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
