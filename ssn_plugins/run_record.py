"""The run record: what a run really was, written into its folder by the tools that ran it.

The one schema of a run folder's files that both sides share: the library's trainers and test tools write it,
the reproduction toolkit (:mod:`ssn_plugins.reproduction.runs`) reads it.

One file (``run_record.json``), one writer (:func:`write_run_record`), one reader (:func:`read_run_record`).
The training and test tools write what ran, from the objects that ran (the process group's world size, the
built config, the weights loaded): tool, task, data set, model, norm, GPUs x images per GPU, pretrained
weights, config and commit (what a config describes: :mod:`ssn_plugins.run_identity`). ``ssn-reproduce`` writes
what the run is for: suite, run, table and the
figure it is compared with. Writes merge, so both halves survive in either order, and a run resumed with
another GPU count or batch keeps every setting it ran with in ``settings``.

The leaderboard reads the record; only a folder without one (a run of another tool) is described by
inference from its config, and its rows say "inferred".
"""
import datetime
import json
import os
import subprocess
from pathlib import Path
from typing import Optional, Tuple

RUN_RECORD = "run_record.json"
SCHEMA = 1
#: the file a test run appends its metrics to, in the work directory: one JSON line per test, with the weights
#: it tested (``checkpoint``), its ``metrics`` and how it was tested (``ssn-mm-test``; ``ssn-train-net --eval-only``)
TEST_RESULTS = "test_results.json"
#: the classification tools' final metrics (:func:`write_final_metrics`)
FINAL_METRICS = "metrics.json"
#: what ran, written by the tool
RAN_FIELDS = ("tool", "task", "dataset", "model", "norm", "gpus", "images_per_gpu", "pretrained", "config", "commit",
              "evaluated_only", "weights")
#: what the run is for, written by tools/reproduce.py
LAUNCH_FIELDS = ("suite", "run", "table", "figure")


def write_run_record(folder, **fields) -> dict:
    """Merge ``fields`` into ``folder``'s record (created when missing) and return the record.

    ``gpus`` and ``images_per_gpu`` also append ``[gpus, images_per_gpu]`` to ``settings`` when it is new."""
    unknown = sorted(set(fields) - set(RAN_FIELDS) - set(LAUNCH_FIELDS))
    if unknown:
        raise TypeError(f"write_run_record: unknown field(s) {unknown}; known: {RAN_FIELDS + LAUNCH_FIELDS}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = read_run_record(folder) or {"schema": SCHEMA}
    if "gpus" in fields or "images_per_gpu" in fields:
        setting = [fields.get("gpus", record.get("gpus")), fields.get("images_per_gpu", record.get("images_per_gpu"))]
        settings = record.setdefault("settings", [])
        if setting not in settings:
            settings.append(setting)
    record.update(fields)
    record["written"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    _write_json(folder / RUN_RECORD, record)
    return record


def write_final_metrics(folder, metrics: dict, iterations: int) -> dict:
    """The classification tools' :data:`FINAL_METRICS` (``top1`` and friends, and the ``iterations`` trained),
    written when a run has finished: its presence is what marks the run finished."""
    written = {**metrics, "iterations": int(iterations)}
    _write_json(Path(folder) / FINAL_METRICS, written)
    return written


def _write_json(path: Path, obj: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(partial, path)  # a reader never sees half a file


def read_run_record(folder) -> Optional[dict]:
    """``folder``'s record, or ``None`` without one; a ``ValueError`` names the file and what is wrong."""
    path = Path(folder) / RUN_RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{RUN_RECORD}: {e}") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise ValueError(f"{RUN_RECORD}: not a schema-{SCHEMA} run record")
    return record


def current_commit() -> str:
    """The commit of the ssn_plugins checkout (``+dirty`` with uncommitted changes), else the package version."""
    from . import __version__

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                              text=True, timeout=20)
        lines = head.stdout.split()
        # the checkout the package is in, not a repository that merely contains an installed copy
        if head.returncode == 0 and len(lines) == 2 and Path(lines[0]).resolve() == root:
            head.stdout = lines[1]
            status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=20)
            return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return f"ssn_plugins {__version__}"


def pretrain_setting(weights: str) -> Optional[Tuple[int, int]]:
    """The batch setting (GPUs, images per GPU) that weights named ``ssn://[LAYOUT/]NAME`` were trained at, from
    the catalogue; ``None`` for other weights (a path says nothing about how it was trained)."""
    from .model_zoo import find_entry
    entry = find_entry(weights)
    return entry.batch_setting if entry is not None else None


def trained_setting(weights: str) -> Tuple[Optional[int], Optional[int]]:
    """What a test of ``weights`` records as the tested model's training setting: the release's, for a trained
    downstream model of the catalogue; unknown otherwise (an ImageNet backbone's setting is its pretraining's,
    not that of the model under test)."""
    from .model_zoo import find_entry
    entry = find_entry(weights)
    if entry is None or entry.task == "classification":
        return None, None
    return entry.batch_setting or (None, None)
