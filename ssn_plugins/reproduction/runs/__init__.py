"""Finding runs of the project's tools in work folders and reading what they are and what they measured.

One reader module per family of tools, each recognising its folder by the files its tools write
(:data:`READERS`, tried in order): :mod:`.own_tools`, :mod:`.detectron2`, :mod:`.mmengine`.

Each gives a :class:`Run`: what it is (task, dataset, model, norm, batch setting, pretrained weights), its
evaluations, whether it finished, and its final checkpoint. What it is comes from the run record the project's
tools write (:mod:`ssn_plugins.run_record`); a folder without one (another tool's run) is described
from its config by the same rules (:mod:`ssn_plugins.run_identity`) and says so (``described == "inferred"``).
A folder that looks like a run but cannot be read is a run with status ``unreadable`` and the reason; nothing is
dropped silently.
"""
import re
from pathlib import Path
from typing import List, Optional

from ...run_record import read_run_record
from . import detectron2, mmengine, own_tools
from .run import FINISHED, MISSING, PARTIAL, UNREADABLE, Evaluation, Run, last_error, unreadable

__all__ = ["Run", "Evaluation", "FINISHED", "PARTIAL", "UNREADABLE", "MISSING", "READERS", "read_run", "find_runs",
           "apply_record"]

#: ``(recognise, read)`` per family of tools, tried in order
READERS = [(own_tools.recognise, own_tools.read), (detectron2.recognise, detectron2.read),
           (mmengine.recognise, mmengine.read)]


def read_run(folder: Path) -> Optional[Run]:
    """The run in ``folder``, or ``None`` when the folder is not a run of any known tool.

    What the run is comes from its run record where it has one; a folder with a record and nothing else (a
    launched run whose tool wrote nothing yet) is a partial run."""
    try:
        record = read_run_record(folder)
    except ValueError as e:
        return unreadable(Run(folder, "?", PARTIAL), str(e))
    try:
        run = _read_tool_output(folder)
    except Exception as e:  # a file of an unexpected shape (a list for a record, text for a number): this run only
        return unreadable(Run(folder, (record or {}).get("tool", "?"), PARTIAL), f"{type(e).__name__}: {e}")
    if run is None and record is not None:
        run = Run(folder, record.get("tool", "?"), PARTIAL, problem="the tool wrote nothing yet" + last_error(folder))
    if run is not None and record is not None and run.status != UNREADABLE:
        apply_record(run, record)
    return run


def _read_tool_output(folder: Path) -> Optional[Run]:
    for recognise, read in READERS:
        if recognise(folder):
            return read(folder)
    return None


def apply_record(run: Run, record: dict) -> None:
    """What the run is, from its record (over what its config suggested)."""
    run.record, run.described = record, "run record"
    run.describe(record)
    run.settings = [tuple(s) for s in record.get("settings", [])]


def _natural(path: Path):
    """Sort key: ``bn_1x2`` before ``bn_1x32``, by the numbers in the name."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def find_runs(root: Path, max_depth: int = 3) -> List[Run]:
    """Every run in ``root`` or in its sub-folders (up to ``max_depth`` levels), in path order, each folder once
    (symbolic links to a folder already seen are skipped).

    A ``root`` that does not exist, or holds no run, gives one run with status ``missing``; a run whose files
    cannot be read is one run with status ``unreadable``, not an error for the whole list.
    """
    root = Path(root)
    if not root.is_dir():
        return [Run(root, "?", MISSING, problem="no such folder")]
    runs, seen = [], set()

    def visit(folder: Path, depth: int):
        real = folder.resolve()
        if real in seen:  # a symbolic link to a folder already listed (or to an ancestor): once is enough
            return
        seen.add(real)
        run = read_run(folder)
        if run is not None:
            runs.append(run)
            return
        if depth < max_depth:
            for child in sorted((p for p in folder.iterdir() if p.is_dir()), key=_natural):
                visit(child, depth + 1)

    visit(root, 0)
    return runs or [Run(root, "?", MISSING, problem="no run of a known tool in this folder")]
