"""Charts of which normalizer each SN/SSN layer chose, from a checkpoint or a run's folder.

    python tools/analyze_selection.py work_dirs/real_mini_mask_rcnn_ssn            # a run (or a suite folder)
    python tools/analyze_selection.py model_final.pth -o charts/

Writes PNGs (matplotlib): `selection_per_layer.png` (per layer in network order, the mean and variance
ratios over IN / LN / BN as stacked bars, a triangle over each fixed selection: the SN/SSN papers'
per-layer figures), `selection_per_stage.png` (the share of each normalizer per stage) and, for a run
that logged them (detectron2 metrics.json, mmengine scalars.json, TensorBoard events),
`ratio_trajectories.png` (the ratios averaged over layers and the number of one-hot vectors over the
iterations); also `selection.json` (the per-layer rows) and the table on standard output.
A folder with several runs gets one sub-folder of charts per run. Checkpoints are read weights-only
(mmengine's objects allow-listed); ``--trust-pickle`` reads files that hold other objects with full
unpickling (only for files you trust).
"""
import json
import sys
from pathlib import Path

from ssn_plugins.checkpoints import ConversionError
from ssn_plugins.cli import tool_parser
from ssn_plugins.reproduction.charts import selection_charts
from ssn_plugins.reproduction.leaderboard import checkpoint_selection_rows
from ssn_plugins.reproduction.runs import MISSING, find_runs
from ssn_plugins.reproduction.scalars import read_scalars
from ssn_plugins.selection import count_selections, format_selection


class Unreadable(Exception):
    """A checkpoint this tool cannot chart, with the reason in one line."""


def analyze(checkpoint: Path, scalars_files, output: Path, title: str, trust_pickle: bool = False) -> list:
    try:
        rows = checkpoint_selection_rows(checkpoint, trust_pickle)
    except ConversionError as e:  # (it names the file, and how to trust it where that would help)
        raise Unreadable(str(e)) from None
    except Exception as e:  # torch.load's many failures (truncated zip, empty file, ...) and non-state-dict files
        raise Unreadable(f"{checkpoint}: not a checkpoint this tool can read ({type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no detail'})") from None
    if not rows:
        raise Unreadable(f"{checkpoint} has no SN/SSN layers (no mean_weight / var_weight logits)")
    print(f"{title}: {len(rows)} SN/SSN layers in {checkpoint}")
    print(format_selection(rows))
    print(f"selections (SSN mean / variance vectors): {count_selections(rows)}")
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for name, png in selection_charts(rows, read_scalars(scalars_files) if scalars_files else None, title):
        (output / name).write_bytes(png)
        written.append(output / name)
    (output / "selection.json").write_text(json.dumps(rows, indent=1))
    for path in written:
        print(f"wrote {path}")
    return written


def main(argv=None):
    parser = tool_parser(__doc__, "analyze_selection")
    parser.add_argument("source", type=Path, help="a checkpoint file, or a run / suite folder")
    parser.add_argument("-o", "--output", type=Path, help="default: SOURCE/selection_charts (a folder), "
                                                          "or SOURCE's folder/<name>_selection (a file)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="read checkpoints with full unpickling (only for files you trust; default weights-only)")
    args = parser.parse_args(argv)
    if args.source.is_file():
        try:
            analyze(args.source, [], args.output or args.source.with_name(args.source.stem + "_selection"),
                    args.source.stem, args.trust_pickle)
        except Unreadable as e:
            raise SystemExit(f"analyze_selection: {e}") from None
        return 0
    runs = [r for r in find_runs(args.source) if r.status != MISSING]
    if not runs:
        raise SystemExit(f"{args.source}: neither a checkpoint nor a folder with a run of this project's tools")
    output = args.output or args.source / "selection_charts"
    failed = []
    for run in runs:
        if run.checkpoint is None:
            failed.append(f"{run.path}: no checkpoint ({run.status}{', ' + run.problem if run.problem else ''})")
            continue
        where = output if len(runs) == 1 else output / run.path.relative_to(args.source)
        try:
            analyze(run.checkpoint, run.scalars_files, where, run.path.name, args.trust_pickle)
        except Unreadable as e:  # one bad run does not stop the others
            failed.append(str(e))
    for line in failed:
        print(f"skipped {line}", file=sys.stderr)
    return 1 if failed and len(failed) == len(runs) else 0


if __name__ == "__main__":
    sys.exit(main())
