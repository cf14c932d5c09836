"""A run as the toolkit sees it (:class:`Run`, :class:`Evaluation`, the statuses) and the helpers every reader
shares."""
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ...run_record import pretrain_setting

#: run status values
FINISHED, PARTIAL, UNREADABLE, MISSING = "finished", "partial", "unreadable", "missing"


@dataclass
class Evaluation:
    step: int                   # iteration (or epoch for epoch-based runs) of the evaluation; -1 for a test run
    metrics: Dict[str, float]   # the papers' metric names: "box AP", "mask AP", "mIoU", "mIoU (ms)", "top1", ...
    kind: str = "val"           # "val" during training, "test" for a separate test run


@dataclass
class Run:
    path: Path
    tool: str
    status: str
    problem: str = ""
    task: str = "?"
    dataset: str = "?"
    model: str = "?"
    norm: str = "?"
    batch: Tuple[Optional[int], Optional[int]] = (None, None)
    evaluations: List[Evaluation] = field(default_factory=list)
    checkpoint: Optional[Path] = None
    scalars_files: List[Path] = field(default_factory=list)
    #: the weights a test run evaluated as it named them (a path, or ``ssn://NAME`` for a released model)
    tested_weights: str = ""
    #: the weights training started from, as the config names them ("" from scratch)
    pretrained: str = ""
    #: "run record" (the tool wrote what ran) or "inferred" (read from the config after the fact)
    described: str = "inferred"
    #: the run record, when the folder has one
    record: Optional[dict] = None
    #: every (GPUs, images per GPU) the run ran with, from its record (more than one: resumed with another)
    settings: List[Tuple[Optional[int], Optional[int]]] = field(default_factory=list)

    @property
    def pretrain_setting(self) -> Optional[Tuple[int, int]]:
        """The batch setting the pretrained weights were trained at, where the catalogue knows it."""
        return pretrain_setting(self.pretrained)

    def pick(self, how: str = "final", kind: Optional[str] = None) -> Optional[Evaluation]:
        """The last evaluation (``final``), or the one with the best first metric (``best``); of ``kind`` only
        (``"val"``, ``"test"``) when given."""
        if how not in ("final", "best"):
            raise ValueError(f"pick must be 'final' or 'best', got {how!r}")
        evaluations = [e for e in self.evaluations if kind is None or e.kind == kind]
        if not evaluations:
            return None
        if how == "final":
            return evaluations[-1]
        return max(evaluations, key=lambda e: next(iter(e.metrics.values()), float("-inf")))

    def results(self, how: str = "final") -> Tuple[str, Dict[str, float], bool]:
        """``(label, metrics, tested)``: the metrics of the picked validation, then every test run's (single-scale,
        multi-scale, 10-clip: each its own metric names) on top, so that no evaluation of the run is lost."""
        chosen = self.pick(how, "val")
        tests = [e for e in self.evaluations if e.kind == "test"]
        metrics = dict(chosen.metrics) if chosen else {}
        for test in tests:
            metrics.update(test.metrics)
        if chosen is None and not tests:
            return "–", {}, False
        label = " + ".join(([f"{how}, step {chosen.step}"] if chosen else []) + (["test"] if tests else []))
        return label, metrics, bool(tests)

    def describe(self, fields: Dict) -> None:
        """Take what a config describes (:mod:`ssn_plugins.run_identity`, or a run record's fields)."""
        for key in ("task", "dataset", "model", "norm", "pretrained"):
            if fields.get(key) is not None:
                setattr(self, key, fields[key])
        if "gpus" in fields or "images_per_gpu" in fields:
            self.batch = (fields.get("gpus"), fields.get("images_per_gpu"))


def unreadable(run: Run, why: str) -> Run:
    run.status, run.problem = UNREADABLE, why
    return run


_ERROR = re.compile(r"^(\w+(?:Error|Exception)): (.+)$")


def last_error(folder: Path) -> str:
    """``; stopped with <the exception>`` from the run's log (reproduce.py's, else the tool's), or nothing."""
    for name in ("reproduce.log", "log.txt"):
        log = folder / name
        if log.exists():
            errors = [m.group(0) for m in map(_ERROR.match, log.read_text(errors="replace").splitlines()) if m]
            if errors:
                return f"; stopped with {errors[-1][:200]}"
    return ""


def json_lines(path: Path, folder: Path) -> List[dict]:
    """The records of a JSON-lines file (blank lines skipped); a ValueError names the file and line of a bad one."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path.relative_to(folder)} line {number}: {e}") from None
    return records


def last_checkpoint(folder: Path) -> Optional[Path]:
    pointer = folder / "last_checkpoint"
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    path = Path(name) if Path(name).is_absolute() else folder / name
    return path if path.exists() else None
