"""Finding runs of the project's tools in work folders and reading what they are and what they measured.

One reader per kind of run, each recognising its folder by the files its tool writes:

- detectron2 (``tools/train_net.py``, ``tools/detectron2_real_mini.py``): ``config.yaml`` and ``metrics.json``
  (``test_results.json`` for ``--eval-only``);
- mmengine (``tools/mm_train.py``, ``tools/mm_test.py``, ``tools/openmmlab_real_mini.py``): the dumped
  config ``*.py`` beside timestamped log folders;
- our classification tools (``tools/pretrain_imagenet.py``, ``tools/train_fashion_mnist.py``):
  ``config.json`` with a ``tool`` entry, and ``metrics.json`` at the end.

Each gives a :class:`Run`: what it is (task, dataset, model, norm, batch setting, pretrained weights), its
evaluations, whether it finished, and its final checkpoint. What it is comes from the run record the project's
tools write (:mod:`~ssn_plugins.reproduction.record`); a folder without one (another tool's run) is described
from its config and says so (``described == "inferred"``). A folder that looks like a run but cannot be read is
a run with status ``unreadable`` and the reason; nothing is dropped silently.
"""
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .record import pretrain_setting, read_run_record

#: run status values
FINISHED, PARTIAL, UNREADABLE, MISSING = "finished", "partial", "unreadable", "missing"

#: how the frameworks' norm names read in the papers' tables
NORM_NAMES = {"FrozenBN": "BN frozen", "BN": "BN", "BN3d": "BN", "SyncBN": "SyncBN", "naiveSyncBN": "SyncBN",
              "GN": "GN", "SN": "SN", "SN3d": "SN", "SSN": "SSN", "SSN3d": "SSN", "SyncSN": "SyncSN",
              "SyncSSN": "SyncSSN", "SyncSSN3d": "SyncSSN", "": "none"}


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


def _dataset_name(name: str) -> str:
    lowered = name.lower()
    if lowered.startswith("real_mini"):  # the bundled photos, whatever classes they are labelled in
        return "real_mini"
    for key, pretty in (("coco", "COCO"), ("cityscapes", "Cityscapes"), ("ade", "ADE20K"),
                        ("kinetics400", "Kinetics-400"), ("kinetics", "Kinetics-400"), ("imagenet", "ImageNet")):
        if key in lowered:
            return pretty
    return name


def _schedule(max_iter: int, images_per_batch: int) -> str:
    """``1x`` / ``2x`` / ... of detectron2's 90k iterations at 16 images, else the number of iterations."""
    ratio = max_iter * images_per_batch / 16 / 90000
    return f"{round(ratio)}x" if ratio >= 0.5 and abs(ratio - round(ratio)) < 0.05 else f"{max_iter} iters"


# ---------------------------------------------------------------------------------------------- detectron2
_D2_METRICS = {"bbox/AP": "box AP", "segm/AP": "mask AP"}


def read_detectron2(folder: Path) -> Run:
    import yaml
    run = Run(folder, "detectron2", PARTIAL)
    try:
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        describe_detectron2_config(cfg, run, _world_size_from_log(folder / "log.txt"))
        max_iter = int(cfg["SOLVER"]["MAX_ITER"])
        test_sets = list(cfg.get("DATASETS", {}).get("TEST", []))
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as e:
        return _unreadable(run, f"config.yaml: {e}")
    metrics_file = folder / "metrics.json"
    if metrics_file.exists():
        try:
            records = _json_lines(metrics_file, folder)
        except ValueError as e:
            return _unreadable(run, str(e))
        for record in records:
            found = _d2_metrics(record, test_sets)
            if found:
                run.evaluations.append(Evaluation(int(record.get("iteration", -1)), found))
        run.scalars_files.append(metrics_file)
    results = folder / TEST_RESULTS
    if results.exists():  # tools/train_net.py --eval-only
        try:
            records = _json_lines(results, folder)
        except ValueError as e:
            return _unreadable(run, str(e))
        for record in records:
            run.evaluations.append(Evaluation(-1, _d2_metrics(record["metrics"], test_sets), "test"))
            run.tested_weights = record["checkpoint"]
    final = folder / "model_final.pth"
    run.checkpoint = final if final.exists() else _last_checkpoint(folder)
    trained = [e for e in run.evaluations if e.kind == "val"]
    last_step = trained[-1].step if trained else None
    if final.exists() and last_step is not None and last_step >= max_iter - 1:
        run.status = FINISHED
    elif results.exists() and run.evaluations and not trained:  # an --eval-only run: tested is finished
        run.status = FINISHED
    else:
        run.problem = ("no evaluation" if last_step is None else f"last evaluation at iteration {last_step}") + \
            f" of {max_iter}" + ("" if final.exists() else ", no model_final.pth") + _last_error(folder)
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


_ERROR = re.compile(r"^(\w+(?:Error|Exception)): (.+)$")


def _last_error(folder: Path) -> str:
    """``; stopped with <the exception>`` from the run's log (reproduce.py's, else the tool's), or nothing."""
    for name in ("reproduce.log", "log.txt"):
        log = folder / name
        if log.exists():
            errors = [m.group(0) for m in map(_ERROR.match, log.read_text(errors="replace").splitlines()) if m]
            if errors:
                return f"; stopped with {errors[-1][:200]}"
    return ""


def describe_detectron2_config(cfg: dict, run: Run, world_size: Optional[int]) -> None:
    """Task, dataset, model, norm and batch setting of a detectron2 config (a ``CfgNode`` or its YAML dict)."""
    model, solver = cfg["MODEL"], cfg["SOLVER"]
    resnets = model.get("RESNETS", {})
    backbone = NORM_NAMES.get(resnets.get("NORM", ""), resnets.get("NORM", ""))
    heads = {NORM_NAMES.get(model[k]["NORM"], model[k]["NORM"]) for k in ("FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD")
             if model.get(k, {}).get("NORM", "")}
    heads.discard(backbone)
    run.norm = backbone + ("+CE" if resnets.get("CE", {}).get("ENABLED") else "") + \
        (f" + {'/'.join(sorted(heads))} heads" if heads else "")
    ims = int(solver["IMS_PER_BATCH"])
    run.batch = (world_size, ims // world_size) if world_size else (None, None)
    arch = "Mask R-CNN" if model.get("MASK_ON") else "Faster R-CNN"
    run.task = "instance segmentation" if model.get("MASK_ON") else "detection"
    body = "FPN" if "fpn" in model.get("BACKBONE", {}).get("NAME", "fpn").lower() else "C4"
    run.model = f"{arch} R{resnets.get('DEPTH', 50)}-{body} {_schedule(int(solver['MAX_ITER']), ims)}"
    run.pretrained = str(model.get("WEIGHTS", "") or "")
    tests = cfg.get("DATASETS", {}).get("TEST", [])
    run.dataset = _dataset_name(re.sub(r"_(val|test|train)$", "", tests[0])) if tests else "?"


def _json_lines(path: Path, folder: Path) -> List[dict]:
    """The records of a JSON-lines file (blank lines skipped); a ValueError names the file and line of a bad one."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path.relative_to(folder)} line {number}: {e}") from None
    return records


def _world_size_from_log(log: Path) -> Optional[int]:
    if not log.exists():
        return None
    found = re.search(r"World size: (\d+)", log.read_text(errors="replace"))
    return int(found.group(1)) if found else None


def _last_checkpoint(folder: Path) -> Optional[Path]:
    pointer = folder / "last_checkpoint"
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    path = Path(name) if Path(name).is_absolute() else folder / name
    return path if path.exists() else None


# ---------------------------------------------------------------------------------------------- mmengine
_TIMESTAMP = re.compile(r"^\d{8}_\d{6}$")
#: mmengine metric keys (val/test prefixes removed) -> (the papers' name, scale to percent)
_MM_METRICS = {"mIoU": ("mIoU", 1.0), "coco/bbox_mAP": ("box AP", 100.0), "coco/segm_mAP": ("mask AP", 100.0),
               "acc/top1": ("top1", 100.0), "acc/top5": ("top5", 100.0)}
#: the file a test run appends its metrics to, in the work directory: one JSON line per test, with the weights
#: it tested (``checkpoint``), its ``metrics`` and how it was tested (tools/mm_test.py; tools/train_net.py --eval-only)
TEST_RESULTS = "test_results.json"


def _mm_config_file(folder: Path) -> Optional[Path]:
    configs = sorted(folder.glob("*.py"))
    return configs[0] if len(configs) == 1 else None


def is_mmengine_run(folder: Path) -> bool:
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


def read_mmengine(folder: Path) -> Run:
    run = Run(folder, "mmengine", PARTIAL)
    config_file = _mm_config_file(folder)
    try:
        from mmengine.config import Config
        cfg = Config.fromfile(str(config_file))
        describe_mmengine_config(cfg, run)
    except Exception as e:  # mmengine raises many types for a config it cannot read
        return _unreadable(run, f"{config_file.name}: {type(e).__name__}: {e}")
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
                records = _json_lines(scalars, folder)
            except ValueError as e:
                return _unreadable(run, str(e))
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
            records = _json_lines(results, folder)
        except ValueError as e:
            return _unreadable(run, str(e))
        for record in records:
            run.evaluations.append(Evaluation(-1, _mm_metrics(record["metrics"], record.get("tta", False),
                                                              record.get("clips", 1)), "test"))
            run.checkpoint = Path(record["checkpoint"]) if Path(record["checkpoint"]).exists() else run.checkpoint
            run.tested_weights = record["checkpoint"]
    run.batch = (gpus, run.batch[1])
    train_cfg = cfg.get("train_cfg") or {}
    length = train_cfg.get("max_iters") or train_cfg.get("max_epochs")
    run.checkpoint = run.checkpoint or _last_checkpoint(folder)
    trained_to = max((e.step for e in run.evaluations if e.kind == "val"), default=None)
    tested = any(e.kind == "test" for e in run.evaluations)
    # finished: evaluated at the config's last iteration / epoch, or tested with tools/mm_test.py (whose runner
    # dumps its own config over the training one, so a tested folder's length may not be the training's)
    if (trained_to is not None and length and trained_to >= length) or tested:
        run.status = FINISHED
    else:
        run.problem = ("no evaluation" if trained_to is None else f"last evaluation at {trained_to} of {length}") \
            + _last_error(folder)
    if run.evaluations and not run.evaluations[-1].metrics:
        run.problem = "the last evaluation reported no metric (mmdet: no detection to score)"
    return run


def _mm_dataset_name(dataset: dict) -> str:
    """The papers' name of a data set known by its data root (``data/cityscapes/``), else the root's folder name
    (``real_mini``), else known by its annotation file or type (``CocoDataset``), else the annotation file's
    folder."""
    root = str(dataset.get("data_root") or "").rstrip("/")
    if root:
        return _dataset_name(root) if _dataset_name(root) != root else Path(root).name
    ann_file = str(dataset.get("ann_file") or "")
    for text in (ann_file, str(dataset.get("type") or "")):
        if text and _dataset_name(text) != text:
            return _dataset_name(text)
    # mmaction2's lists name their folder: datasets/real_clips/real_clips_train_list_videos.txt
    return Path(ann_file).parent.name or str(dataset.get("type", "?"))


def _mm_pretrained(model: dict, backbone: dict) -> str:
    """The weights an mmengine model starts from: the backbone's ``init_cfg`` checkpoint, else ``pretrained``."""
    init_cfgs = backbone.get("init_cfg") or []
    for init in init_cfgs if isinstance(init_cfgs, (list, tuple)) else [init_cfgs]:
        if isinstance(init, dict) and init.get("type") == "Pretrained" and init.get("checkpoint"):
            return str(init["checkpoint"])
    return str(model.get("pretrained") or backbone.get("pretrained") or "")


def describe_mmengine_config(cfg, run: Run) -> None:
    """Task, dataset, model, norm and images per GPU of an mmseg / mmdet / mmaction2 config."""
    model = cfg.model
    if model.get("type", "").endswith("TTAModel"):  # mm_test.py --tta wraps the model
        model = model["module"]
    backbone = model.get("backbone", {})
    norm_cfg = backbone.get("norm_cfg") or {"type": "BN"}
    norm = NORM_NAMES.get(norm_cfg.get("type", "?"), norm_cfg.get("type", "?"))
    if norm == "BN" and (not norm_cfg.get("requires_grad", True)) and backbone.get("norm_eval", False):
        norm = "BN frozen"
    run.norm = norm + ("+CE" if str(backbone.get("type", "")).endswith("CE") else "")  # ResNetCE, ResNet3dCE
    run.pretrained = _mm_pretrained(model, backbone)
    depth = backbone.get("depth", "?")
    kind = model.get("type", "?")
    train_loader = cfg.get("train_dataloader") or {}
    # the data set the metrics are measured on: the test set's (a released model tested on other photos than the
    # ones it was trained on says so), else the validation or training set's
    loader = next((cfg.get(k) for k in ("test_dataloader", "val_dataloader") if cfg.get(k)), train_loader)
    dataset = loader.get("dataset", {})
    while "dataset" in dataset:  # RepeatDataset and friends
        dataset = dataset["dataset"]
    run.dataset = _mm_dataset_name(dataset)
    if kind == "EncoderDecoder":
        head = model.get("decode_head", {}).get("type", "?")
        run.task = "semantic segmentation"
        run.model = {"ASPPHead": "DeepLab", "PSPHead": "PSPNet"}.get(head, head) + f" R{depth}-D8"
    elif kind in ("MaskRCNN", "FasterRCNN"):
        run.task = "instance segmentation" if kind == "MaskRCNN" else "detection"
        epochs = (cfg.get("train_cfg") or {}).get("max_epochs")
        schedule = f" {epochs // 12}x" if epochs and epochs % 12 == 0 else (f" {epochs} epochs" if epochs else "")
        run.model = ("Mask R-CNN" if kind == "MaskRCNN" else "Faster R-CNN") + f" R{depth}-FPN" + schedule
    elif kind == "Recognizer3D":
        run.task = "video classification"
        run.model = ("I3D" if backbone.get("type") == "ResNet3d" else backbone.get("type", "?")) + f" R{depth}"
    else:
        run.task, run.model = "?", kind
    run.batch = (None, train_loader.get("batch_size"))


# ---------------------------------------------------------------------------------------------- our tools
def read_own_tool(folder: Path) -> Run:
    try:
        config = json.loads((folder / "config.json").read_text())
        # what the run is comes from its run record; a folder written before there were records has it here
        run = Run(folder, config["tool"], PARTIAL, task=config.get("task", "?"),
                  dataset=_dataset_name(config.get("dataset", "?")), model=config.get("model", "?"),
                  norm=config.get("norm", "?"), batch=tuple(config.get("batch_setting", (None, None))))
    except (OSError, KeyError, TypeError, ValueError) as e:
        return _unreadable(Run(folder, "?", PARTIAL), f"config.json: {e}")
    metrics_file = folder / "metrics.json"
    tb = folder / "tb"
    if tb.exists():
        run.scalars_files.extend(sorted(tb.glob("events.out.tfevents.*")))
    if not metrics_file.exists():
        run.problem = "no metrics.json (not finished)" + _last_error(folder)
        run.checkpoint = folder / "last.pth" if (folder / "last.pth").exists() else None
        return run
    try:
        metrics = json.loads(metrics_file.read_text())
        run.evaluations.append(Evaluation(int(metrics.get("iterations", metrics.get("epochs", -1))),
                                          {k: float(metrics[k]) for k in ("top1", "top5") if k in metrics}))
    except (OSError, ValueError, TypeError) as e:
        return _unreadable(run, f"metrics.json: {e}")
    if not run.evaluations[0].metrics:
        return _unreadable(run, "metrics.json has no top1")
    run.status = FINISHED
    run.checkpoint = folder / "final.pth" if (folder / "final.pth").exists() else None
    return run


def _unreadable(run: Run, why: str) -> Run:
    run.status, run.problem = UNREADABLE, why
    return run


# ---------------------------------------------------------------------------------------------- discovery
def read_run(folder: Path) -> Optional[Run]:
    """The run in ``folder``, or ``None`` when the folder is not a run of any known tool.

    What the run is comes from its run record where it has one; a folder with a record and nothing else (a
    launched run whose tool wrote nothing yet) is a partial run."""
    try:
        record = read_run_record(folder)
    except ValueError as e:
        return _unreadable(Run(folder, "?", PARTIAL), str(e))
    try:
        run = _read_tool_output(folder)
    except Exception as e:  # a file of an unexpected shape (a list for a record, text for a number): this run only
        return _unreadable(Run(folder, (record or {}).get("tool", "?"), PARTIAL), f"{type(e).__name__}: {e}")
    if run is None and record is not None:
        run = Run(folder, record.get("tool", "?"), PARTIAL, problem="the tool wrote nothing yet" + _last_error(folder))
    if run is not None and record is not None and run.status != UNREADABLE:
        apply_record(run, record)
    return run


def _read_tool_output(folder: Path) -> Optional[Run]:
    if (folder / "config.json").exists():
        return read_own_tool(folder)
    written = ("metrics.json", "log.txt", TEST_RESULTS)
    if (folder / "config.yaml").exists() and any((folder / f).exists() for f in written):
        return read_detectron2(folder)
    if is_mmengine_run(folder):
        return read_mmengine(folder)
    return None


def apply_record(run: Run, record: dict) -> None:
    """What the run is, from its record (over what its config suggested)."""
    run.record, run.described = record, "run record"
    for key in ("task", "dataset", "model", "norm", "pretrained"):
        if record.get(key) is not None:
            setattr(run, key, record[key])
    if "gpus" in record or "images_per_gpu" in record:
        run.batch = (record.get("gpus"), record.get("images_per_gpu"))
    run.settings = [tuple(s) for s in record.get("settings", [])]


def ran_fields(run: Run) -> dict:
    """The record fields of a run a tool has just described from the config it runs."""
    return {"task": run.task, "dataset": run.dataset, "model": run.model, "norm": run.norm,
            "pretrained": run.pretrained}


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
