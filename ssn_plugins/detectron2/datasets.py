"""Registration of the real mini set (see ``ssn_plugins.datasets.real_mini``) in detectron2's catalogs."""
from pathlib import Path
from typing import Tuple

from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances

from ..datasets.real_mini import CATEGORIES


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
    return names
