"""OpenMMLab model-index files for the shipped configs: ``model-index.yml``, and per config folder a
``metafile.yaml`` and a ``README.md`` with its table (``python tools/leaderboard.py --paper --update``).

Each config is one ``Models`` entry, as in mmseg's / mmdet's model index: config, training data, norm, GPUs x
images per GPU (the config name's ``8xb2``, else mmdet's ``auto_scale_lr.base_batch_size``), the pretrained
weights and their licence, and per task (box AP under Object Detection, mask AP under Instance Segmentation)
the papers' figure for that setting, matched with the leaderboard's rule; a figure measured at another setting
(another pretrained model) is named in the entry, not published as its result. A config of a released trained
model has the release's figures and ``Weights: ssn://NAME``.
"""
import functools
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..run_identity import describe_mmengine_config
from .figures import load_sources, paper_figures, source_url, value_text
from .leaderboard import match_figure, setting_differences
from .runs import Run
from .suites import SUITES

#: the config folders that get a metafile, relative to configs/
FAMILIES = ("mmseg/deeplabv3", "mmseg/pspnet", "mmseg/released", "mmdet/mask_rcnn", "mmaction/i3d")
#: the metafiles' task of each metric (mmdet lists box AP under Object Detection even for Mask R-CNN)
METRIC_TASKS = {"box AP": "Object Detection", "mask AP": "Instance Segmentation", "mIoU": "Semantic Segmentation",
                "mIoU (ms)": "Semantic Segmentation", "top1 (10-clip)": "Action Recognition",
                "top5 (10-clip)": "Action Recognition"}
#: the metafiles' metric names (mmseg writes the multi-scale flip result as "mIoU(ms+flip)")
METRIC_NAMES = {"mIoU (ms)": "mIoU(ms+flip)", "box AP": "box AP", "mask AP": "mask AP", "mIoU": "mIoU",
                "top1 (10-clip)": "top1 acc", "top5 (10-clip)": "top5 acc"}
#: the metrics each task reports
TASK_METRICS = {"semantic segmentation": ("mIoU", "mIoU (ms)"), "instance segmentation": ("box AP", "mask AP"),
                "detection": ("box AP",), "video classification": ("top1 (10-clip)", "top5 (10-clip)")}
CODE_LICENCE = "Apache License 2.0"


@functools.lru_cache(maxsize=None)
def _suite_folders() -> Dict[str, Tuple[str, str]]:
    """``{config: (suite, run)}`` for every config a suite's training step runs (the first suite wins)."""
    folders = {}
    for name, factory in SUITES.items():
        for run in factory(False).runs:
            for arg in run.steps[0].args:
                folders.setdefault(arg, (name, run.name))
    return folders


def _gpus(cfg, name: str, per_gpu: Optional[int]) -> Optional[int]:
    """The GPU count a config is written for: ``8xb2`` in its name (mmseg, mmaction2), else mmdet's
    ``auto_scale_lr.base_batch_size`` over the images per GPU."""
    found = re.search(r"_(\d+)xb(\d+)", name)
    if found:
        return int(found.group(1))
    base = (cfg.get("auto_scale_lr") or {}).get("base_batch_size")
    return base // per_gpu if base and per_gpu and base % per_gpu == 0 else None


def _paper(norm: str) -> dict:
    key = "SSN" if "SSN" in norm else "CE" if "CE" in norm else "SN"
    return {"Title": load_sources()[key], "URL": source_url(key)}


def config_entry(config_path: Path, repo: Path) -> dict:
    from mmengine.config import Config

    from ..model_zoo import SCHEME, catalogue, find_entry
    cfg = Config.fromfile(str(config_path))
    run = Run(config_path, "mmengine", "config")
    run.describe(describe_mmengine_config(cfg))
    relative = config_path.relative_to(repo).as_posix()
    released = next((e for e in catalogue().values() if e.config == relative), None)
    if released is not None:  # the release's own model: trained at the release's setting
        run.batch = released.batch_setting
    else:
        run.batch = (_gpus(cfg, config_path.name, run.batch[1]), run.batch[1])
    results: Dict[str, Dict[str, float]] = {}
    notes = []
    for metric in TASK_METRICS.get(run.task, ()):
        if released is not None:
            value = released.results.get(metric)
            note = f"the {released.release} release's figure"
        else:
            figure = match_figure(paper_figures(), run.task, run.dataset, run.model, run.norm, run.batch, metric)
            if figure is None:
                continue
            value, note = figure.value, f"{figure.label} in {figure.source} ({figure.table})"
            differences = setting_differences(run, figure)
            if differences:  # measured at another setting: named, not published as this config's result
                notes.append(f"not compared with {note}: {'; '.join(differences)}")
                continue
            if figure.norm != run.norm:
                note += f" (no published {run.norm} figure; the SSN paper reports SSN at or above SN)"
        if value is not None:
            results.setdefault(METRIC_TASKS[metric], {})[METRIC_NAMES[metric]] = float(value)
            notes.append(note)
    metadata = {"Training Data": run.dataset, "Norm": run.norm, "Architecture": run.model,
                "Batch Size": (run.batch[0] or 1) * (run.batch[1] or 0),
                "Training Resources": f"{run.batch[0]}x GPUs" if run.batch[0] else "unstated"}
    pretrained = find_entry(run.pretrained)
    if run.pretrained:
        metadata["Pretrained"] = run.pretrained
        if pretrained is not None:
            metadata["Pretrained Licence"] = pretrained.licence or "not stated by the release"
    if notes:
        metadata["Paper Figure"] = "; ".join(dict.fromkeys(notes))
    entry = {"Name": config_path.stem, "In Collection": config_path.parent.name, "Config": relative,
             "Metadata": metadata, "Paper": _paper(run.norm),
             "Results": [{"Task": task, "Dataset": run.dataset, "Metrics": metrics}
                         for task, metrics in results.items()]}
    if released is not None:
        from .figures import trained_model_name
        metadata["Architecture"] = trained_model_name(released)
        entry["Weights"] = SCHEME + released.name
        metadata["Weights Licence"] = released.licence or "not stated by the release"
    else:
        where = _suite_folders().get(relative)
        if where:  # no published weights: the checkpoint tools/reproduce.py leaves
            train_cfg = cfg.get("train_cfg") or {}
            checkpoint = (f"iter_{train_cfg['max_iters']}.pth" if train_cfg.get("max_iters")
                          else f"epoch_{train_cfg.get('max_epochs')}.pth")
            metadata["Reproduce"] = f"python tools/reproduce.py {where[0]} --norms {where[1]}"
            metadata["Checkpoint"] = f"work_dirs/reproduce/{where[0]}/{where[1]}/{checkpoint}"
    return entry


def family_metafile(family: Path, repo: Path) -> Dict:
    models = [config_entry(p, repo) for p in sorted(family.glob("*.py"))]
    return {"Collections": [{"Name": family.name, "License": CODE_LICENCE,
                             "Metadata": {"Training Data": sorted({m["Metadata"]["Training Data"] for m in models})},
                             "Paper": _paper("SN"), "README": "README.md"}],
            "Models": models}


HEADER = ("Generated from ssn_plugins/reproduction/paper_figures.yaml and ssn_plugins/model_zoo.json by "
          "`python tools/leaderboard.py --paper --update`; do not edit by hand.")


def render_metafile(family: Path, repo: Path) -> str:
    import yaml
    return f"# {HEADER}\n" + yaml.safe_dump(family_metafile(family, repo), sort_keys=False, allow_unicode=True,
                                            width=110)


def render_readme(family: Path, repo: Path) -> str:
    """The folder's README: one row per config with its setting, the figure it is compared with and weights."""
    meta = family_metafile(family, repo)
    lines = [f"# {family.relative_to(repo / 'configs').as_posix()}", "", f"<!-- {HEADER} -->", "",
             "| config | norm | batch (GPUs x images) | pretrained | the papers' figures | weights |",
             "|---|---|---|---|---|---|"]
    for m in meta["Models"]:
        md = m["Metadata"]
        figures = "; ".join(f"{r['Task']}: " + ", ".join(f"{k} {value_text(v)}" for k, v in r["Metrics"].items())
                            for r in m["Results"]) or "–"
        weights = f"`{m['Weights']}`" if "Weights" in m else (
            f"`{md['Reproduce']}` leaves `{md['Checkpoint']}`" if "Checkpoint" in md else "–")
        lines.append(f"| [{m['Name']}]({Path(m['Config']).name}) | {md['Norm']} | {md['Batch Size']} on "
                     f"{md['Training Resources']} | {md.get('Pretrained', '–')} | {figures} | {weights} |")
    notes = [f"- `{m['Name']}`: {m['Metadata']['Paper Figure']}" for m in meta["Models"]
             if "Paper Figure" in m["Metadata"]]
    licences = sorted({(m["Metadata"]["Pretrained"], m["Metadata"]["Pretrained Licence"])
                       for m in meta["Models"] if "Pretrained Licence" in m["Metadata"]})
    licences += sorted({(m["Weights"], m["Metadata"]["Weights Licence"]) for m in meta["Models"]
                        if "Weights Licence" in m["Metadata"]})
    out = lines + (["", "Where each figure is from:", "", *notes] if notes else [])
    if licences:
        out += ["", "The weights' licences, as their releases state them:", "",
                *[f"- `{name}`: {licence}" for name, licence in licences]]
    return "\n".join(out) + "\n"


def render_model_index() -> str:
    import yaml
    imports = [f"configs/{family}/metafile.yaml" for family in FAMILIES]
    return f"# {HEADER}\n" + yaml.safe_dump({"Import": imports}, sort_keys=False)


def write_metafiles(configs: Path) -> List[Path]:
    """Every family's ``metafile.yaml`` and ``README.md``, and the repository's ``model-index.yml``."""
    repo = configs.parent
    written = []
    for family in FAMILIES:
        for name, render in (("metafile.yaml", render_metafile), ("README.md", render_readme)):
            path = configs / family / name
            path.write_text(render(configs / family, repo))
            written.append(path)
    index = repo / "model-index.yml"
    index.write_text(render_model_index())
    return written + [index]
