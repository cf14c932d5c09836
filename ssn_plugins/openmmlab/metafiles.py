"""OpenMMLab-style metafiles (``configs/<codebase>/<family>/metafile.yaml``) from the papers' figures.

Each config of a family becomes one ``Models`` entry, as in mmseg's / mmdet's model index: its config,
training data, batch, norm, the papers' figure for it (matched with the same rule the leaderboard uses,
from the config's own model, data set and norm) and the checkpoint ``tools/reproduce.py`` leaves.
"""
import functools
import re
from pathlib import Path
from typing import Dict, List, Tuple

from ..reproduction.figures import load_sources, paper_figures
from ..reproduction.leaderboard import match_figure
from ..reproduction.runs import Run, describe_mmengine_config
from ..reproduction.suites import SUITES

#: the families that get a metafile, relative to configs/
FAMILIES = ("mmseg/deeplabv3", "mmseg/pspnet", "mmdet/mask_rcnn", "mmaction/i3d")
TASK_NAMES = {"semantic segmentation": "Semantic Segmentation", "instance segmentation": "Instance Segmentation",
              "detection": "Object Detection", "video classification": "Action Recognition"}
#: the metafiles' metric names (mmseg writes the multi-scale flip result as "mIoU(ms+flip)")
METRIC_NAMES = {"mIoU (ms)": "mIoU(ms+flip)", "box AP": "box AP", "mask AP": "mask AP", "mIoU": "mIoU",
                "top1": "top1 acc", "top5": "top5 acc", "top1 (10-clip)": "top1 acc", "top5 (10-clip)": "top5 acc"}
#: the metrics each task reports
TASK_METRICS = {"semantic segmentation": ("mIoU", "mIoU (ms)"), "instance segmentation": ("box AP", "mask AP"),
                "detection": ("box AP",), "video classification": ("top1 (10-clip)", "top5 (10-clip)")}


@functools.lru_cache(maxsize=None)
def _suite_folders() -> Dict[str, Tuple[str, str]]:
    """``{config: (suite, run)}`` for every config a suite's training step runs (the first suite wins)."""
    folders = {}
    for name, factory in SUITES.items():
        for run in factory(False).runs:
            for arg in run.steps[0].args:
                folders.setdefault(arg, (name, run.name))
    return folders


def config_entry(config_path: Path, repo: Path) -> dict:
    from mmengine.config import Config
    cfg = Config.fromfile(str(config_path))
    run = Run(config_path, "mmengine", "config")
    describe_mmengine_config(cfg, run)
    gpus = re.search(r"_(\d+)xb(\d+)", config_path.name)
    run.batch = (int(gpus.group(1)), run.batch[1]) if gpus else run.batch
    relative = config_path.relative_to(repo).as_posix()
    metrics, notes = {}, []
    figures = paper_figures()
    for metric in TASK_METRICS.get(run.task, ()):
        figure = match_figure(figures, run.task, run.dataset, run.model, run.norm, run.batch, metric)
        if figure is not None:
            metrics[METRIC_NAMES[metric]] = figure.value
            note = f"{figure.label} in {figure.source} ({figure.table})"
            if figure.norm != run.norm:
                note += f": no published {run.norm} figure; the SSN paper reports SSN at or above SN"
            notes.append(note)
    train_cfg = cfg.get("train_cfg") or {}
    checkpoint = (f"iter_{train_cfg['max_iters']}.pth" if train_cfg.get("max_iters")
                  else f"epoch_{train_cfg.get('max_epochs')}.pth")
    where = _suite_folders().get(relative)
    entry = {
        "Name": config_path.stem,
        "In Collection": config_path.parent.name,
        "Config": relative,
        "Metadata": {"Training Data": run.dataset, "Norm": run.norm, "Model": run.model,
                     "Batch Size": (run.batch[0] or 1) * (run.batch[1] or 0),
                     "Training Resources": f"{run.batch[0]}x GPUs" if run.batch[0] else "unstated"},
        "Results": ([{"Task": TASK_NAMES.get(run.task, run.task), "Dataset": run.dataset, "Metrics": metrics,
                      "Paper figure": "; ".join(dict.fromkeys(notes))}] if metrics else []),
        "Weights": (f"work_dirs/reproduce/{where[0]}/{where[1]}/{checkpoint}" if where else checkpoint),
    }
    return entry


def family_metafile(family: Path, repo: Path) -> Dict:
    sources = load_sources()
    models = [config_entry(p, repo) for p in sorted(family.glob("*.py"))]
    return {"Collections": [{"Name": family.name, "License": "Apache License 2.0",
                             "Metadata": {"Training Data": sorted({m["Metadata"]["Training Data"] for m in models})},
                             "Paper": {"Title": sources["SN"]}, "README": "MODEL_ZOO.md"}],
            "Models": models}


def render_metafile(family: Path, repo: Path) -> str:
    import yaml
    header = ("# Generated from ssn_plugins/reproduction/paper_figures.yaml by "
              "`python tools/leaderboard.py --paper --update`; do not edit by hand.\n")
    return header + yaml.safe_dump(family_metafile(family, repo), sort_keys=False, allow_unicode=True, width=110)


def write_metafiles(configs: Path) -> List[Path]:
    repo = configs.parent
    written = []
    for family in FAMILIES:
        path = configs / family / "metafile.yaml"
        path.write_text(render_metafile(configs / family, repo))
        written.append(path)
    return written
