"""detectron2 end to end on the real mini set: the main job, a two-process gloo run, eval-only."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "detectron2" / "real_mini" / "mask_rcnn_R_50_FPN_ssn.yaml"
SMALL = ["INPUT.MIN_SIZE_TRAIN", "(160,)", "INPUT.MAX_SIZE_TRAIN", "224", "INPUT.MIN_SIZE_TEST", "160",
         "INPUT.MAX_SIZE_TEST", "224", "MODEL.SSN.BATCH_AVERAGE_ITERS", "1", "DATALOADER.NUM_WORKERS", "0"]


def run(args, cwd, env=None, timeout=900):
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                            timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("d2_real_mini")


def test_main_job_reports_ap_before_and_after(workdir):
    out = run([REPO / "tools" / "detectron2_real_mini.py", "--data", workdir / "data", "SOLVER.MAX_ITER", "2",
               "OUTPUT_DIR", workdir / "main", *SMALL], cwd=workdir)
    assert re.search(r"COCO AP on the real mini set before training: box [\d.]+, mask [\d.]+", out)
    assert re.search(r"COCO AP after 2 iterations: box [\d.]+, mask [\d.]+", out)
    assert "normalizer per layer" in out and "backbone.bottom_up.res2.0.conv1.norm" in out
    summary = json.loads((workdir / "main" / "real_mini_summary.json").read_text())
    assert set(summary["ap_before"]) == {"bbox", "segm"} and summary["iterations"] == 2


def test_two_process_gloo_sync_ssn_then_eval_only(workdir):
    out_dir = workdir / "gloo"
    env = {"SSN_REAL_MINI": str(workdir / "data")}
    sync = [f"{key}.NORM" for key in ("MODEL.RESNETS", "MODEL.FPN", "MODEL.ROI_BOX_HEAD", "MODEL.ROI_MASK_HEAD")]
    out = run([REPO / "tools" / "train_net.py", "--num-gpus", "2", "--config-file", CONFIG, "MODEL.DEVICE", "cpu",
               "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", out_dir, *SMALL,
               *[x for key in sync for x in (key, "SyncSSN")]], cwd=workdir, env=env)
    assert (out_dir / "model_final.pth").exists()
    # the final evaluation ran (after 2 iterations from scratch there may be no detection to score)
    assert "Start inference on" in out and "Total inference time" in out
    out = run([REPO / "tools" / "train_net.py", "--eval-only", "--config-file", CONFIG, "MODEL.DEVICE", "cpu",
               "MODEL.WEIGHTS", out_dir / "model_final.pth", "OUTPUT_DIR", workdir / "eval", *SMALL], cwd=workdir,
              env=env)
    assert "Start inference on" in out and "Total inference time" in out
