"""Runs of the classification tools (``ssn-pretrain-imagenet``, ``ssn-train-fashion-mnist``): ``config.json`` with
a ``tool`` entry, and ``metrics.json`` at the end."""
import json
from pathlib import Path

from ...run_identity import dataset_name
from ...run_record import FINAL_METRICS
from .run import FINISHED, PARTIAL, Evaluation, Run, last_error, unreadable


def recognise(folder: Path) -> bool:
    return (folder / "config.json").exists()


def read(folder: Path) -> Run:
    try:
        config = json.loads((folder / "config.json").read_text())
        # what the run is comes from its run record; a folder written before there were records has it here
        run = Run(folder, config["tool"], PARTIAL, task=config.get("task", "?"),
                  dataset=dataset_name(config.get("dataset", "?")), model=config.get("model", "?"),
                  norm=config.get("norm", "?"), batch=tuple(config.get("batch_setting", (None, None))))
    except (OSError, KeyError, TypeError, ValueError) as e:
        return unreadable(Run(folder, "?", PARTIAL), f"config.json: {e}")
    metrics_file = folder / FINAL_METRICS
    tb = folder / "tb"
    if tb.exists():
        run.scalars_files.extend(sorted(tb.glob("events.out.tfevents.*")))
    if not metrics_file.exists():
        run.problem = "no metrics.json (not finished)" + last_error(folder)
        run.checkpoint = folder / "last.pth" if (folder / "last.pth").exists() else None
        return run
    try:
        metrics = json.loads(metrics_file.read_text())
        run.evaluations.append(Evaluation(int(metrics["iterations"]),
                                          {k: float(metrics[k]) for k in ("top1", "top5") if k in metrics}))
    except KeyError as e:
        return unreadable(run, f"metrics.json: no {e} entry")
    except (OSError, ValueError, TypeError) as e:
        return unreadable(run, f"metrics.json: {e}")
    if not run.evaluations[0].metrics:
        return unreadable(run, "metrics.json has no top1")
    run.status = FINISHED
    run.checkpoint = folder / "final.pth" if (folder / "final.pth").exists() else None
    return run
