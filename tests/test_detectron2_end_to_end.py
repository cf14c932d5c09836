"""detectron2 end to end on the real mini set: the main job, a two-process gloo run, eval-only."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # pytest -m "not slow" leaves it out; CI runs it

pytest.importorskip("detectron2")  # needs the full stack; a torch-only install runs the core tests


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
    assert re.search(r"COCO AP on the real mini set after 2 iterations: box [\d.]+, mask [\d.]+", out)
    assert "normalizer per layer" in out and "backbone.bottom_up.res2.0.conv1.norm" in out
    summary = json.loads((workdir / "main" / "real_mini_summary.json").read_text())
    assert set(summary["ap_before"]) == {"bbox", "segm", "detected"} and summary["iterations"] == 2
    for ap in (summary["ap_before"], summary["ap_after"]):  # COCO's 0 only where nothing was detected
        assert ap["detected"] or ap["bbox"] == ap["segm"] == 0.0
    assert sum(summary["selections"]["mean"].values()) == 69 and "selected normalizers" in out


def test_main_job_accepts_channel_equilibrium(workdir):
    out = run([REPO / "tools" / "detectron2_real_mini.py", "--ce", "--data", workdir / "data", "SOLVER.MAX_ITER", "1",
               "OUTPUT_DIR", workdir / "ce", *SMALL], cwd=workdir)
    assert re.search(r"COCO AP on the real mini set after 1 iterations: box [\d.]+, mask [\d.]+", out)
    import torch
    saved = torch.load(workdir / "ce" / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    ce = {k.rsplit(".ce.", 1)[0] for k in saved if ".ce." in k}
    assert len(ce) == 14 and "backbone.bottom_up.stem.conv1" in ce and "backbone.bottom_up.res4.5.conv3" in ce


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
    # the run record says what ran: two processes, the config's batch split between them
    trained = json.loads((out_dir / "run_record.json").read_text())
    assert (trained["tool"], trained["gpus"], trained["settings"]) == ("train_net", 2, [[2, trained["images_per_gpu"]]])
    assert trained["norm"] == "SyncSSN" and trained["config"] == str(CONFIG) and trained["commit"]
    out = run([REPO / "tools" / "train_net.py", "--eval-only", "--config-file", CONFIG, "MODEL.DEVICE", "cpu",
               "MODEL.WEIGHTS", out_dir / "model_final.pth", "OUTPUT_DIR", workdir / "eval", *SMALL], cwd=workdir,
              env=env)
    assert "Start inference on" in out and "Total inference time" in out
    tested = json.loads((workdir / "eval" / "run_record.json").read_text())
    assert tested["evaluated_only"] and tested["weights"] == str(out_dir / "model_final.pth")
    assert (tested["gpus"], tested["images_per_gpu"]) == (None, None)  # a local file: how it trained is not known here
    # a test in the training folder leaves the training's record as it is
    from ssn_plugins.detectron2.trainer import load_config, record_run
    cfg = load_config(str(CONFIG), ["OUTPUT_DIR", str(out_dir), "MODEL.WEIGHTS", str(out_dir / "model_final.pth")])
    record_run(cfg, str(CONFIG), eval_only=True)
    assert json.loads((out_dir / "run_record.json").read_text()) == trained


def test_reopen_selection_lets_a_finetuning_run_select_again(workdir):
    """A sparse model's fixed selections re-open with MODEL.SSN.REOPEN_SELECTION and train again."""
    import torch

    import ssn_plugins as S
    import ssn_plugins.detectron2 as sd
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    sd.add_ssn_config(cfg)
    sd.merge_config_file(cfg, CONFIG)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    sparse = build_model(cfg)
    S.set_radius(sparse, 1.0)  # every selection fixed, as in a published SSN model
    weights = workdir / "sparse.pth"
    torch.save({"model": sparse.state_dict()}, weights)
    env = {"SSN_REAL_MINI": str(workdir / "data")}
    out_dir = workdir / "reopen"
    out = run([REPO / "tools" / "train_net.py", "--config-file", CONFIG, "MODEL.DEVICE", "cpu",
               "MODEL.WEIGHTS", weights,
               "MODEL.SSN.REOPEN_SELECTION", "True", "SOLVER.MAX_ITER", "2", "MODEL.SSN.RADIUS_END_ITER", "100",
               "MODEL.SSN.INFERENCE_STATS", "moving_average", "OUTPUT_DIR", out_dir, *SMALL], cwd=workdir, env=env)
    assert "re-opened the SSN selections" in out
    final = torch.load(out_dir / "model_final.pth", weights_only=False)["model"]
    flags = [v for k, v in final.items() if k.endswith(("mean_fixed", "var_fixed"))]
    assert len(flags) == 2 * 69 and not any(bool(f) for f in flags)  # open, not fixed again at once
    logits = [v for k, v in final.items() if k.endswith(("mean_weight", "var_weight"))]
    assert sum(int(v.abs().max() > 0) for v in logits) > 0.9 * len(logits)  # moved off uniform: they trained
