"""The OpenMMLab real-data runs, shortened: mmseg DeepLabV3 + SSN (mIoU) and mmdet Mask R-CNN + SSN (COCO AP)
train on the real mini sets through tools/openmmlab_real_mini.py and report their metrics."""
import json
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

import openmmlab_real_mini  # noqa: E402


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs read datasets/... relative to the working directory
    return tmp_path


def test_deeplabv3_ssn_on_real_segmentation(in_tmp, capsys):
    summary = openmmlab_real_mini.main([
        "seg", "--work-dir", str(in_tmp / "seg"), "--cfg-options", "train_cfg.max_iters=3",
        "model.data_preprocessor.size=(128,128)",
        "train_dataloader.dataset.pipeline.3.crop_size=(128,128)", "custom_hooks.1.num_iters=2"])
    print(json.dumps(summary))
    assert (in_tmp / "datasets/real_mini_seg/ann_dir/val/voc.png").exists()
    assert summary["iterations"] == 3
    for when in ("before", "after"):
        assert 0.0 <= summary[when]["mIoU"] <= 100.0 and 0.0 < summary[when]["aAcc"] <= 100.0
    assert json.loads((in_tmp / "seg" / "summary.json").read_text()) == summary
    assert (in_tmp / "seg" / "ssn_selection.json").exists()
    assert "mIoU" in capsys.readouterr().out


def test_mask_rcnn_ssn_on_real_instances(in_tmp):
    summary = openmmlab_real_mini.main([
        "det", "--work-dir", str(in_tmp / "det"), "--cfg-options", "train_cfg.max_epochs=1",
        "custom_hooks.1.num_iters=1"])
    print(json.dumps(summary))
    assert summary["iterations"] == 3  # 6 training images, 2 per batch
    for when in ("before", "after"):
        assert set(summary[when]) == {"coco/bbox_mAP", "coco/segm_mAP"}
        assert all(0.0 <= v <= 1.0 for v in summary[when].values())
