"""What a suite's runs read before they start: the data sets and weights their configs name, checked to exist.

``tools/reproduce.py`` calls :func:`missing_inputs` before it launches anything (and ``--dry-run`` prints it), so
that a cluster job does not fail at start-up on a data root it cannot see. Each framework is asked where it will
look, with its own loader: detectron2's dataset catalog (``$DETECTRON2_DATASETS``, default ``./datasets``),
mmengine's configs (``data_root`` and ``data_prefix`` of each data loader, relative to the clone). Data the tools
build themselves (the real mini sets, Fashion-MNIST) and weights named by a scheme (``ssn://``, ``detectron2://``,
``open-mmlab://``, ``torchvision://``, URLs) are not checked; local weight files are.
"""
from pathlib import Path
from typing import List, Optional, Sequence

from ..config_files import resolve_config

__all__ = ["missing_inputs"]

#: data the project's tools build when it is missing
_BUILT_BY_TOOLS = ("real_mini", "real_clips")
#: weights a framework downloads itself
_DOWNLOADED = ("ssn://", "detectron2://", "open-mmlab://", "torchvision://", "http://", "https://", "mmcls://")


def _shown(path: Path, repo: Path) -> str:
    """``path`` relative to the clone when it is inside it (as the configs write it)."""
    return str(path.relative_to(repo)) if path.is_relative_to(repo) else str(path)


def _weights_problem(weights: Optional[str], repo: Path, what: str) -> List[str]:
    if not weights or str(weights).startswith(_DOWNLOADED) or "CHECKPOINT" in str(weights):
        return []
    path = Path(weights) if Path(weights).is_absolute() else repo / weights
    return [] if path.exists() else [f"{what}: {weights} (no such file)"]


def _config_path(config: str, repo: Path) -> str:
    """A step's config: the file below ``repo``, else the shipped config of that name (as the tools read it)."""
    path = repo / config
    return str(path) if path.is_file() else resolve_config(config)


def _detectron2_inputs(args: Sequence[str], repo: Path) -> List[str]:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ..detectron2.trainer import load_config
    config = args[args.index("--config-file") + 1]
    rest = [a for a in args[args.index("--config-file") + 2:] if not a.startswith("--")]
    opts = [a for i, a in enumerate(rest) if not (rest[i - 1:i] == ["OUTPUT_DIR"] or a == "OUTPUT_DIR")]
    cfg = load_config(_config_path(config, repo), opts)
    problems = []
    training = () if "--eval-only" in args else tuple(cfg.DATASETS.TRAIN)  # --eval-only reads the test sets only
    for name in dict.fromkeys(training + tuple(cfg.DATASETS.TEST)):
        if name.startswith(_BUILT_BY_TOOLS):
            continue
        if name not in DatasetCatalog.list():
            problems.append(f"{config}: data set {name!r} is not registered in detectron2")
            continue
        meta = MetadataCatalog.get(name)
        for key in ("image_root", "json_file"):
            path = meta.get(key)  # relative to the run's working folder, the clone
            if path and not (Path(path) if Path(path).is_absolute() else repo / path).exists():
                problems.append(f"{config}: {name}: {path} (missing; detectron2 reads $DETECTRON2_DATASETS, default "
                                f"./datasets)")
    return problems + _weights_problem(cfg.MODEL.WEIGHTS, repo, f"{config}: MODEL.WEIGHTS")


def _mmengine_inputs(tool: str, args: Sequence[str], repo: Path) -> List[str]:
    from mmengine.config import Config

    config = args[0]
    cfg = Config.fromfile(_config_path(config, repo))
    problems = []
    loaders = ("test_dataloader",) if tool == "mm_test" else ("train_dataloader", "val_dataloader", "test_dataloader")
    for loader in loaders:
        dataset = (cfg.get(loader) or {}).get("dataset", {})
        while "dataset" in dataset:  # RepeatDataset and friends
            dataset = dataset["dataset"]
        root = dataset.get("data_root")
        base = (Path(root) if Path(root).is_absolute() else repo / root) if root else repo
        paths = ([base] if root else []) + [base / p for p in (dataset.get("data_prefix") or {}).values()
                                            if isinstance(p, str) and p]
        if dataset.get("ann_file"):  # mmengine joins a relative ann_file to the data root
            ann = Path(dataset["ann_file"])
            paths.append(ann if ann.is_absolute() else base / ann)
        if any(built in str(path) for path in paths for built in _BUILT_BY_TOOLS):
            continue
        problems += [f"{config}: {loader}: {_shown(p, repo)} (missing)" for p in dict.fromkeys(paths) if not p.exists()]
    model = cfg.get("model", {})
    for what, weights in (("model.pretrained", model.get("pretrained")),
                          ("model.backbone.pretrained", (model.get("backbone") or {}).get("pretrained")),
                          ("model.backbone.init_cfg", ((model.get("backbone") or {}).get("init_cfg") or {})
                           .get("checkpoint")),
                          ("load_from", cfg.get("load_from"))):
        problems += _weights_problem(weights, repo, f"{config}: {what}")
    checkpoint = args[1] if len(args) > 1 and not str(args[1]).startswith("--") else None
    return problems + _weights_problem(checkpoint, repo, f"{config}: the checkpoint to test")


def missing_inputs(planned, repo: Path, data: Optional[Path]) -> List[str]:
    """Every input the next step of each planned run would read and cannot find, one line each."""
    problems: List[str] = []
    for p in planned:
        if not p.steps:
            continue
        step = p.steps[0]
        if step.tool == "train_net":
            problems += _detectron2_inputs(step.args, repo)
        elif step.tool in ("mm_train", "mm_test"):
            problems += _mmengine_inputs(step.tool, step.args, repo)
        elif "DATA" in step.args and data is not None and not Path(data).is_dir():
            problems.append(f"{p.run.name}: --data {data} (no such folder)")
    return list(dict.fromkeys(problems))
