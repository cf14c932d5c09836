"""What a run is, read from the config it runs: task, data set, model, norm (as the papers' tables name them),
pretrained weights and batch setting.

The trainers (detectron2's ``record_run``, mmengine's) describe the config they have just built and write the
result into the run record (:mod:`ssn_plugins.run_record`); the reproduction toolkit applies the same rules to a
folder without a record (another tool's run) and marks its row "inferred". Configs are read as mappings (a
``CfgNode``, an mmengine ``Config`` or their YAML / dict forms): no framework is imported here.
"""
import re
from pathlib import Path
from typing import Dict, Optional

__all__ = ["NORM_NAMES", "dataset_name", "describe_detectron2_config", "describe_mmengine_config"]

#: how the frameworks' norm names read in the papers' tables
NORM_NAMES = {"FrozenBN": "BN frozen", "BN": "BN", "BN3d": "BN", "SyncBN": "SyncBN", "naiveSyncBN": "SyncBN",
              "GN": "GN", "SN": "SN", "SN3d": "SN", "SSN": "SSN", "SSN3d": "SSN", "SyncSN": "SyncSN",
              "SyncSSN": "SyncSSN", "SyncSSN3d": "SyncSSN", "": "none"}


def dataset_name(name: str) -> str:
    """The papers' name of a data set known by a substring of ``name`` (``coco_2017_val`` -> ``COCO``), else
    ``name``; the bundled photos are ``real_mini`` whatever classes they are labelled in."""
    lowered = name.lower()
    if lowered.startswith("real_mini"):
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


def describe_detectron2_config(cfg, world_size: Optional[int]) -> Dict:
    """``{task, dataset, model, norm, pretrained, gpus, images_per_gpu}`` of a detectron2 config (a ``CfgNode`` or
    its YAML dict) run on ``world_size`` processes (``None``: unknown, and so is the batch setting)."""
    model, solver = cfg["MODEL"], cfg["SOLVER"]
    resnets = model.get("RESNETS", {})
    backbone = NORM_NAMES.get(resnets.get("NORM", ""), resnets.get("NORM", ""))
    heads = {NORM_NAMES.get(model[k]["NORM"], model[k]["NORM"]) for k in ("FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD")
             if model.get(k, {}).get("NORM", "")}
    heads.discard(backbone)
    norm = backbone + ("+CE" if resnets.get("CE", {}).get("ENABLED") else "") + \
        (f" + {'/'.join(sorted(heads))} heads" if heads else "")
    ims = int(solver["IMS_PER_BATCH"])
    arch = "Mask R-CNN" if model.get("MASK_ON") else "Faster R-CNN"
    body = "FPN" if "fpn" in model.get("BACKBONE", {}).get("NAME", "fpn").lower() else "C4"
    tests = cfg.get("DATASETS", {}).get("TEST", [])
    return {"task": "instance segmentation" if model.get("MASK_ON") else "detection",
            "dataset": dataset_name(re.sub(r"_(val|test|train)$", "", tests[0])) if tests else "?",
            "model": f"{arch} R{resnets.get('DEPTH', 50)}-{body} {_schedule(int(solver['MAX_ITER']), ims)}",
            "norm": norm, "pretrained": str(model.get("WEIGHTS", "") or ""),
            "gpus": world_size, "images_per_gpu": ims // world_size if world_size else None}


def describe_mmengine_config(cfg) -> Dict:
    """``{task, dataset, model, norm, pretrained, images_per_gpu}`` of an mmseg / mmdet / mmaction2 config (the
    GPU count is the runner's, not the config's)."""
    model = cfg["model"]
    if model.get("type", "").endswith("TTAModel"):  # mm_test.py --tta wraps the model
        model = model["module"]
    backbone = model.get("backbone", {})
    norm_cfg = backbone.get("norm_cfg") or {"type": "BN"}
    norm = NORM_NAMES.get(norm_cfg.get("type", "?"), norm_cfg.get("type", "?"))
    if norm == "BN" and (not norm_cfg.get("requires_grad", True)) and backbone.get("norm_eval", False):
        norm = "BN frozen"
    fields = {"norm": norm + ("+CE" if str(backbone.get("type", "")).endswith("CE") else ""),  # ResNetCE, ResNet3dCE
              "pretrained": _mm_pretrained(model, backbone)}
    depth = backbone.get("depth", "?")
    kind = model.get("type", "?")
    train_loader = cfg.get("train_dataloader") or {}
    # the data set the metrics are measured on: the test set's (a released model tested on other photos than the
    # ones it was trained on says so), else the validation or training set's
    loader = next((cfg.get(k) for k in ("test_dataloader", "val_dataloader") if cfg.get(k)), train_loader)
    dataset = loader.get("dataset", {})
    while "dataset" in dataset:  # RepeatDataset and friends
        dataset = dataset["dataset"]
    fields["dataset"] = _mm_dataset_name(dataset)
    if kind == "EncoderDecoder":
        head = model.get("decode_head", {}).get("type", "?")
        fields["task"] = "semantic segmentation"
        fields["model"] = {"ASPPHead": "DeepLab", "PSPHead": "PSPNet"}.get(head, head) + f" R{depth}-D8"
    elif kind in ("MaskRCNN", "FasterRCNN"):
        fields["task"] = "instance segmentation" if kind == "MaskRCNN" else "detection"
        epochs = (cfg.get("train_cfg") or {}).get("max_epochs")
        schedule = f" {epochs // 12}x" if epochs and epochs % 12 == 0 else (f" {epochs} epochs" if epochs else "")
        fields["model"] = ("Mask R-CNN" if kind == "MaskRCNN" else "Faster R-CNN") + f" R{depth}-FPN" + schedule
    elif kind == "Recognizer3D":
        fields["task"] = "video classification"
        fields["model"] = ("I3D" if backbone.get("type") == "ResNet3d" else backbone.get("type", "?")) + f" R{depth}"
    else:
        fields["task"], fields["model"] = "?", kind
    fields["images_per_gpu"] = train_loader.get("batch_size")
    return fields


def _mm_dataset_name(dataset: dict) -> str:
    """The papers' name of a data set known by its data root (``data/cityscapes/``), else the root's folder name
    (``real_mini``), else known by its annotation file or type (``CocoDataset``), else the annotation file's
    folder."""
    root = str(dataset.get("data_root") or "").rstrip("/")
    if root:
        return dataset_name(root) if dataset_name(root) != root else Path(root).name
    ann_file = str(dataset.get("ann_file") or "")
    for text in (ann_file, str(dataset.get("type") or "")):
        if text and dataset_name(text) != text:
            return dataset_name(text)
    # mmaction2's lists name their folder: datasets/real_clips/real_clips_train_list_videos.txt
    return Path(ann_file).parent.name or str(dataset.get("type", "?"))


def _mm_pretrained(model: dict, backbone: dict) -> str:
    """The weights an mmengine model starts from: the backbone's ``init_cfg`` checkpoint, else ``pretrained``."""
    init_cfgs = backbone.get("init_cfg") or []
    for init in init_cfgs if isinstance(init_cfgs, (list, tuple)) else [init_cfgs]:
        if isinstance(init, dict) and init.get("type") == "Pretrained" and init.get("checkpoint"):
            return str(init["checkpoint"])
    return str(model.get("pretrained") or backbone.get("pretrained") or "")
