"""The real mini segmentation set in ADE20K's 150 classes, for checking a model trained on ADE20K on CPU.

``custom_imports=dict(imports=['ssn_plugins.openmmlab.seg_datasets'])`` registers
``RealMiniSegInADE20KClasses`` in mmseg's ``DATASETS``: the photos and
annotations of ``datasets/real_mini_seg`` (tools/build_real_mini_seg.py) with
each class the set shares with ADE20K (bottle, chair, person, and the dining
table as ADE20K's ``table``) labelled by its ADE20K index, and everything else
(background, ARC2017 items, nuclei) ignored. It works through mmseg's own
``label_map``, which ``LoadAnnotations`` applies; build it without
``reduce_zero_label`` (the map already gives 0-based ADE20K indices). The set is
built at ``data_root`` when missing (as ``tools/train_net.py`` builds the detection set).
"""
from pathlib import Path

from mmseg.datasets import ADE20KDataset, BaseSegDataset
from mmseg.registry import DATASETS

from ..datasets.real_mini import SEG_CLASSES, write_segmentation

__all__ = ["RealMiniSegInADE20KClasses", "ADE20K_NAMES"]

#: the real mini set's classes that ADE20K has, by ADE20K's name
ADE20K_NAMES = {"bottle": "bottle", "chair": "chair", "person": "person", "diningtable": "table"}
#: mmseg's "ignore" label
IGNORE = 255


@DATASETS.register_module(force=True)
class RealMiniSegInADE20KClasses(BaseSegDataset):
    """``datasets/real_mini_seg`` labelled in ADE20K's classes (see the module docstring)."""

    METAINFO = dict(classes=ADE20KDataset.METAINFO["classes"], palette=ADE20KDataset.METAINFO["palette"])

    def __init__(self, img_suffix=".png", seg_map_suffix=".png", reduce_zero_label=False, **kwargs) -> None:
        if reduce_zero_label:
            raise ValueError("RealMiniSegInADE20KClasses: the label map gives 0-based ADE20K indices already; "
                             "build it with reduce_zero_label=False")
        root = kwargs.get("data_root")
        if root and not (Path(root) / "ann_dir").is_dir():
            write_segmentation(Path(root))
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, reduce_zero_label=False, **kwargs)

    @classmethod
    def get_label_map(cls, new_classes=None):
        """The real mini set's label values -> ADE20K's 0-based class indices (255: ignored)."""
        ade = list(ADE20KDataset.METAINFO["classes"])
        return {value: ade.index(ADE20K_NAMES[name]) if name in ADE20K_NAMES else IGNORE
                for value, name in enumerate(SEG_CLASSES)}
