"""Registration of the real mini set (see ``ssn_plugins.datasets.real_mini``) in detectron2's catalogs."""
from pathlib import Path
from typing import Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_instances
from detectron2.data.datasets.builtin_meta import _get_coco_instances_meta

from ..datasets.real_mini import CATEGORIES


#: the real mini set's categories that are COCO categories, by COCO's name
COCO_NAMES = {"bottle": "bottle", "chair": "chair", "person": "person", "diningtable": "dining table"}
#: the suffix of the real mini splits in COCO's 80 classes
COCO80 = "_coco80"


def register_real_mini(root, prefix: str = "real_mini") -> Tuple[str, str]:
    """Register ``<prefix>_train`` and ``<prefix>_val`` from ``root`` (built by tools/build_real_mini_coco.py),
    and ``<prefix>_heldout`` (photos never trained on) when the set has it.

    A name already registered is left as it is; returns the train and val names.
    """
    root = Path(root)
    names = (f"{prefix}_train", f"{prefix}_val")
    heldout = root / "annotations" / "instances_heldout.json"
    if heldout.exists() and f"{prefix}_heldout" not in DatasetCatalog.list():
        register_coco_instances(f"{prefix}_heldout", {"thing_classes": list(CATEGORIES)}, str(heldout),
                                str(root / "images"))
    for name, split in zip(names, ("train", "val")):
        if name in DatasetCatalog.list():
            continue
        json_file = root / "annotations" / f"instances_{split}.json"
        if not json_file.exists():
            raise FileNotFoundError(f"{json_file} is missing: run tools/build_real_mini_coco.py {root}")
        register_coco_instances(name, {"thing_classes": list(CATEGORIES)}, str(json_file), str(root / "images"))
    _register_in_coco_classes(root, prefix)
    return names


def _register_in_coco_classes(root: Path, prefix: str) -> None:
    """``<prefix>_<split>_coco80``: the same photos with COCO's 80 classes and ids, for models trained on COCO
    (a released detector); the annotations of categories COCO does not have (item, nucleus) are left out."""
    coco = _get_coco_instances_meta()
    contiguous = {name: i for i, name in enumerate(coco["thing_classes"])}
    for split in ("train", "val", "heldout"):
        json_file = root / "annotations" / f"instances_{split}.json"
        name = f"{prefix}_{split}{COCO80}"
        if not json_file.exists() or name in DatasetCatalog.list():
            continue

        def load(json_file=json_file, source=f"{prefix}_{split}"):
            records = load_coco_json(str(json_file), str(root / "images"), source)
            for record in records:
                record["annotations"] = [
                    {**a, "category_id": contiguous[COCO_NAMES[CATEGORIES[a["category_id"]]]]}
                    for a in record["annotations"] if CATEGORIES[a["category_id"]] in COCO_NAMES]
            return records

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(evaluator_type="coco", image_root=str(root / "images"), **coco)
