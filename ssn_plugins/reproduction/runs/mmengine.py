"""Runs of mmengine (``ssn-mm-train``, ``ssn-mm-test``, ``ssn-openmmlab-real-mini``): the dumped config ``*.py``
beside timestamped log folders."""
import re
from pathlib import Path
from typing import Dict, Optional

from ...run_identity import describe_mmengine_config
from ...run_record import TEST_RESULTS
from .run import FINISHED, PARTIAL, Evaluation, Run, json_lines, last_checkpoint, last_error, unreadable


_TIMESTAMP = re.compile(r"^\d{8}_\d{6}$")


#: mmengine metric keys (val/test prefixes removed) -> (the papers' name, scale to percent)
_MM_METRICS = {"mIoU": ("mIoU", 1.0), "coco/bbox_mAP": ("box AP", 100.0), "coco/segm_mAP": ("mask AP", 100.0),
               "acc/top1": ("top1", 100.0), "acc/top5": ("top5", 100.0)}


def _mm_config_file(folder: Path) -> Optional[Path]:
    configs = sorted(folder.glob("*.py"))
    return configs[0] if len(configs) == 1 else None


def recognise(folder: Path) -> bool:
    return _mm_config_file(folder) is not None and any(
        p.is_dir() and _TIMESTAMP.match(p.name) for p in folder.iterdir())


def _mm_metrics(record: dict, tta: bool = False, clips: int = 1) -> Dict[str, float]:
    """The papers' metric names of an mmengine metrics record: mIoU of a multi-scale test is ``mIoU (ms)``, top-1 /
    top-5 of an N-clip video test ``top1 (N-clip)`` (the papers' Kinetics figures are 10-clip)."""
    found = {}
    for key, value in record.items():
        key = re.sub(r"^(val|test)/", "", key)
        if key in _MM_METRICS and isinstance(value, (int, float)):
            name, scale = _MM_METRICS[key]
            if tta and name == "mIoU":
                name += " (ms)"
            elif clips > 1 and name in ("top1", "top5"):
                name += f" ({clips}-clip)"
            found[name] = round(float(value) * scale, 4)
    return found


def read(folder: Path) -> Run:
    run = Run(folder, "mmengine", PARTIAL)
    config_file = _mm_config_file(folder)
    try:
        from mmengine.config import Config
        cfg = Config.fromfile(str(config_file))
        run.describe(describe_mmengine_config(cfg))
    except Exception as e:  # mmengine raises many types for a config it cannot read
        return unreadable(run, f"{config_file.name}: {type(e).__name__}: {e}")
    gpus = None
    for stamp in sorted(p for p in folder.iterdir() if p.is_dir() and _TIMESTAMP.match(p.name)):
        log = stamp / f"{stamp.name}.log"
        if log.exists():
            found = re.search(r"GPU number: (\d+)", log.read_text(errors="replace"))
            gpus = int(found.group(1)) if found else gpus
        scalars = stamp / "vis_data" / "scalars.json"
        if scalars.exists():
            run.scalars_files.append(scalars)
            try:
                records = json_lines(scalars, folder)
            except ValueError as e:
                return unreadable(run, str(e))
            for record in records:
                metrics = _mm_metrics(record)
                # a validation line (LoggerHook's: metrics, "time", "step"; mmdet's CocoMetric gives no metric when
                # nothing is detected), not a training line (lr, losses) nor a hook's scalars (ssn/..., step)
                if metrics or ({"step", "time"} <= set(record) and "lr" not in record
                               and not any("loss" in k for k in record)):
                    run.evaluations.append(Evaluation(int(record["step"]), metrics))
    results = folder / TEST_RESULTS
    if results.exists():
        try:
            records = json_lines(results, folder)
        except ValueError as e:
            return unreadable(run, str(e))
        for record in records:
            run.evaluations.append(Evaluation(-1, _mm_metrics(record["metrics"], record.get("tta", False),
                                                              record.get("clips", 1)), "test"))
            run.checkpoint = Path(record["checkpoint"]) if Path(record["checkpoint"]).exists() else run.checkpoint
            run.tested_weights = record["checkpoint"]
    run.batch = (gpus, run.batch[1])
    train_cfg = cfg.get("train_cfg") or {}
    length = train_cfg.get("max_iters") or train_cfg.get("max_epochs")
    run.checkpoint = run.checkpoint or last_checkpoint(folder)
    trained_to = max((e.step for e in run.evaluations if e.kind == "val"), default=None)
    tested = any(e.kind == "test" for e in run.evaluations)
    # finished: evaluated at the config's last iteration / epoch, or tested with tools/mm_test.py (whose runner
    # dumps its own config over the training one, so a tested folder's length may not be the training's)
    if (trained_to is not None and length and trained_to >= length) or tested:
        run.status = FINISHED
    else:
        run.problem = ("no evaluation" if trained_to is None else f"last evaluation at {trained_to} of {length}") \
            + last_error(folder)
    if run.evaluations and not run.evaluations[-1].metrics:
        run.problem = "the last evaluation reported no metric (mmdet: no detection to score)"
    return run
