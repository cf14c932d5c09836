"""OpenMMLab through its own doors: mmengine's Runner.from_cfg on a misspelt norm type, and mim train / resume /
test of a config that loads the plugin by custom_imports (upstream's tools, no copy of ours)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mmengine")  # needs the full stack; a torch-only install runs the core tests

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from ssn_plugins.datasets.real_mini import write_segmentation

from helpers import average_over

REPO = Path(__file__).resolve().parents[1]
SEG_CONFIG = REPO / "configs" / "mmseg" / "real_mini" / "deeplabv3_r18-d8_ssn_real-mini-256x256.py"


@pytest.fixture
def seg_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config reads datasets/real_mini_seg relative to the working directory
    write_segmentation(tmp_path / "datasets" / "real_mini_seg")
    return tmp_path


@pytest.mark.parametrize("typo, nearest", [("SNN", "did you mean 'SN' or 'SSN'?"), ("ssn", "did you mean 'SSN'?"),
                                           ("BatchNorm", "")])
def test_a_misspelt_norm_type_is_named_by_mmengines_runner(typo, nearest, tmp_path):
    cfg = Config.fromfile(str(SEG_CONFIG))  # custom_imports: the plugin registers here
    cfg.work_dir = str(tmp_path)
    # a visualizer of its own: mmengine keeps instances by name, and a later runner would reuse ours (and its folder)
    cfg.visualizer.name = f"typo-{typo}-{tmp_path.name}"
    cfg.model.backbone.norm_cfg = dict(type=typo, requires_grad=True)
    with pytest.raises(KeyError) as error:
        Runner.from_cfg(cfg)
    message = str(error.value)
    assert f"norm_cfg type {typo!r} is not a registered norm layer" in message and "Cannot find None" not in message
    assert nearest in message and "SSN3d" in message  # the registered names are listed


def mim(*args, cwd):
    result = subprocess.run([sys.executable, "-m", "mim", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                            timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


SMALL = ["model.data_preprocessor.size=(128,128)", "train_dataloader.dataset.pipeline.3.crop_size=(128,128)",
         "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
         "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False", average_over(1),
         "default_hooks.logger.interval=1", "default_hooks.checkpoint.interval=1",
         "val_dataloader.dataset.pipeline.1.scale=(256,192)"]  # validation at half its size


@pytest.mark.slow
def test_mim_train_resume_and_test_run_the_plugin_from_custom_imports(seg_data):
    work = seg_data / "work"
    mim("train", "mmseg", SEG_CONFIG, "--work-dir", work, "--cfg-options", "train_cfg.max_iters=2",
        "train_cfg.val_interval=2", *SMALL, cwd=seg_data)
    (scalars,) = work.glob("*/vis_data/scalars.json")
    rows = [json.loads(line) for line in scalars.read_text().splitlines()]
    radius = [r["ssn/radius"] for r in rows if "ssn/radius" in r]
    assert radius == pytest.approx([0.0, 0.5])  # SparsestMaxRadiusHook: t / T
    assert any("mIoU" in r for r in rows)  # validation, after batch-average statistics
    assert (work / "ssn_selection.json").exists() and (work / "iter_2.pth").exists()

    # upstream --resume reads mmengine's own checkpoint with torch's weights_only=True (the plugin's allow-list)
    resumed = mim("train", "mmseg", SEG_CONFIG, "--work-dir", work, "--resume", "--cfg-options",
                  "train_cfg.max_iters=3", "train_cfg.val_interval=3", *SMALL, cwd=seg_data)
    assert "resumed epoch: 0, iter: 2" in resumed and (work / "iter_3.pth").exists()
    state = torch.load(work / "iter_3.pth", map_location="cpu", weights_only=True)  # no full unpickling needed
    assert float(state["state_dict"]["backbone.layer1.0.bn1.radius"]) == pytest.approx(2 / 3)

    tested = mim("test", "mmseg", SEG_CONFIG, "--checkpoint", work / "iter_3.pth", "--work-dir", seg_data / "test",
                 "--cfg-options", *SMALL[4:7], "test_dataloader.dataset.pipeline.1.scale=(256,192)",
                 "test_dataloader.num_workers=0", "test_dataloader.persistent_workers=False", cwd=seg_data)
    assert "Recomputing batch-average statistics over 1 training batches" in tested
    assert "mIoU:" in tested and "Testing finished successfully" in tested
