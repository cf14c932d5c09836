"""Runs of detectron2 (``ssn-train-net``, ``ssn-detectron2-real-mini``): ``config.yaml`` beside ``metrics.json``,
``log.txt`` or (``--eval-only``) the test results."""
import re
from pathlib import Path
from typing import Dict, List, Optional

from ...run_identity import describe_detectron2_config
from ...run_record import TEST_RESULTS
from .run import FINISHED, PARTIAL, Evaluation, Run, json_lines, last_checkpoint, last_error, unreadable


def recognise(folder: Path) -> bool:
    return (folder / "config.yaml").exists() and any(
        (folder / f).exists() for f in ("metrics.json", "log.txt", TEST_RESULTS))


_D2_METRICS = {"bbox/AP": "box AP", "segm/AP": "mask AP"}


def read(folder: Path) -> Run:
    import yaml
    run = Run(folder, "detectron2", PARTIAL)
    try:
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        run.describe(describe_detectron2_config(cfg, _world_size_from_log(folder / "log.txt")))
        max_iter = int(cfg["SOLVER"]["MAX_ITER"])
        test_sets = list(cfg.get("DATASETS", {}).get("TEST", []))
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as e:
        return unreadable(run, f"config.yaml: {e}")
    metrics_file = folder / "metrics.json"
    if metrics_file.exists():
        try:
            records = json_lines(metrics_file, folder)
        except ValueError as e:
            return unreadable(run, str(e))
        for record in records:
            found = _d2_metrics(record, test_sets)
            if found:
                run.evaluations.append(Evaluation(int(record.get("iteration", -1)), found))
        run.scalars_files.append(metrics_file)
    results = folder / TEST_RESULTS
    if results.exists():  # tools/train_net.py --eval-only
        try:
            records = json_lines(results, folder)
        except ValueError as e:
            return unreadable(run, str(e))
        for record in records:
            run.evaluations.append(Evaluation(-1, _d2_metrics(record["metrics"], test_sets), "test"))
            run.tested_weights = record["checkpoint"]
    final = folder / "model_final.pth"
    run.checkpoint = final if final.exists() else last_checkpoint(folder)
    trained = [e for e in run.evaluations if e.kind == "val"]
    last_step = trained[-1].step if trained else None
    if final.exists() and last_step is not None and last_step >= max_iter - 1:
        run.status = FINISHED
    elif results.exists() and run.evaluations and not trained:  # an --eval-only run: tested is finished
        run.status = FINISHED
    else:
        run.problem = ("no evaluation" if last_step is None else f"last evaluation at iteration {last_step}") + \
            f" of {max_iter}" + ("" if final.exists() else ", no model_final.pth") + last_error(folder)
    return run


def _d2_metrics(record: dict, test_sets: List[str]) -> Dict[str, float]:
    """The papers' metrics in a flat detectron2 results record; the first test set's first, then the others'."""
    found = {}
    for key, value in record.items():
        for suffix, name in _D2_METRICS.items():
            if key == suffix:
                found[name] = float(value)
            elif key.endswith("/" + suffix):  # several test sets: "<test set>/bbox/AP"
                test_set = key[: -len(suffix) - 1]
                primary = not test_sets or test_set == test_sets[0]
                found[name if primary else f"{name} ({test_set})"] = float(value)
    return dict(sorted(found.items(), key=lambda item: ("(" in item[0], item[0])))


def _world_size_from_log(log: Path) -> Optional[int]:
    if not log.exists():
        return None
    found = re.search(r"World size: (\d+)", log.read_text(errors="replace"))
    return int(found.group(1)) if found else None
