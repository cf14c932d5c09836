"""The real mini sets (COCO instances, mmseg semantic segmentation): their masks are the packages' human annotations."""
from pathlib import Path

import pytest

pytest.importorskip("numpy")  # needs the full stack; a torch-only install runs the core tests
pytest.importorskip("pycocotools")

import numpy as np

from pycocotools.coco import COCO

from ssn_plugins.datasets.real_mini import CATEGORIES, load_annotated_images, write_coco


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_mini")
    return root, write_coco(root)


def test_sources():
    samples = {s.name: s for s in load_annotated_images()}
    assert len(samples["voc"].masks) == 19 and samples["voc"].categories.count("chair") == 8
    assert len(samples["arc2017"].masks) == 8 and len(samples["nuclei"].masks) == 125
    for s in samples.values():
        assert s.image.dtype == np.uint8 and s.image.shape[2] == 3
        assert s.masks.shape[1:] == s.image.shape[:2] and s.masks.any(axis=(1, 2)).all()


def test_coco_files_decode_to_the_source_masks(mini):
    root, paths = mini
    val, train = COCO(str(paths["val"])), COCO(str(paths["train"]))
    assert len(val.getImgIds()) == 3 and len(train.getImgIds()) == 6
    assert len(val.getAnnIds()) == 19 + 8 + 125 and len(train.getAnnIds()) == 2 * (19 + 8 + 125)
    assert [c["name"] for c in val.loadCats(val.getCatIds())] == CATEGORIES
    samples = {s.name: s for s in load_annotated_images()}
    for image in val.loadImgs(val.getImgIds()):
        source = samples[image["file_name"][:-4]]
        anns = val.loadAnns(val.getAnnIds(imgIds=image["id"]))
        decoded = np.stack([val.annToMask(a).astype(bool) for a in anns])
        assert np.array_equal(decoded, source.masks)
        assert (root / "images" / image["file_name"]).exists()
    flipped = train.loadImgs([i for i in train.getImgIds() if train.loadImgs(i)[0]["file_name"] == "voc_flip.png"])[0]
    mask = train.annToMask(train.loadAnns(train.getAnnIds(imgIds=flipped["id"]))[0]).astype(bool)
    assert np.array_equal(mask, samples["voc"].masks[0][:, ::-1])


def test_detectron2_catalog(mini):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import ssn_plugins.detectron2 as sd

    root, _ = mini
    train_name, val_name = sd.register_real_mini(root, prefix="real_mini_test")
    records = DatasetCatalog.get(val_name)
    assert len(records) == 3 and sum(len(r["annotations"]) for r in records) == 152
    assert MetadataCatalog.get(train_name).thing_classes == CATEGORIES
    assert sd.register_real_mini(root, prefix="real_mini_test") == (train_name, val_name)  # idempotent


def test_segmentation_set_matches_the_instance_masks(tmp_path):
    from PIL import Image

    from ssn_plugins.datasets.real_mini import SEG_CLASSES, write_segmentation

    assert write_segmentation(tmp_path) == {"train": 6, "val": 3}
    samples = {s.name: s for s in load_annotated_images()}
    for stem, flipped in (("voc", False), ("nuclei", False), ("arc2017_flip", True)):
        source = samples[stem.replace("_flip", "")]
        split = "train" if flipped else "val"
        labels = np.asarray(Image.open(tmp_path / "ann_dir" / split / f"{stem}.png"))
        image = np.asarray(Image.open(tmp_path / "img_dir" / split / f"{stem}.png"))
        masks = source.masks[:, :, ::-1] if flipped else source.masks
        assert np.array_equal(image, source.image[:, ::-1] if flipped else source.image)
        # independently: the class of the last instance that covers a pixel, background where none does
        classes = np.array([SEG_CLASSES.index(c) for c in source.categories])
        covered = masks.any(0)
        last = len(masks) - 1 - np.argmax(masks[::-1], axis=0)
        assert np.array_equal(labels, np.where(covered, classes[last], 0))


def test_segmentation_set_loads_in_mmseg(tmp_path):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from ssn_plugins.datasets.real_mini import SEG_CLASSES, write_segmentation

    write_segmentation(tmp_path)
    cfg = Config.fromfile(str(Path(__file__).resolve().parents[1] / "configs/mmseg/real_mini/"
                              "deeplabv3_r18-d8_ssn_real-mini-256x256.py"))
    import mmseg.datasets  # noqa: F401
    from mmseg.registry import DATASETS

    with DefaultScope.overwrite_default_scope("mmseg"):
        val = DATASETS.build({**cfg.val_dataloader.dataset, "data_root": str(tmp_path)})
        train = DATASETS.build({**cfg.train_dataloader.dataset, "data_root": str(tmp_path)})
    assert len(train) == 6 and len(val) == 3
    assert list(val.metainfo["classes"]) == SEG_CLASSES
    sample = val[0]
    values = set(np.unique(sample["data_samples"].gt_sem_seg.data.numpy()).tolist())
    assert values <= set(range(len(SEG_CLASSES))) and len(values) > 1
