"""The main job: Mask R-CNN R50-FPN with SSN on real annotated images, on CPU, with COCO AP before and after.

    python tools/detectron2_real_mini.py                      # builds datasets/real_mini if missing
    python tools/detectron2_real_mini.py SOLVER.MAX_ITER 40   # config overrides, as for train_net.py

It builds the real mini set (tools/build_real_mini_coco.py), registers it,
evaluates box and mask AP of the freshly initialised model with detectron2's
COCO evaluator, trains with tools/train_net.py's Trainer (radius schedule,
batch-average statistics before the final evaluation), evaluates again and
prints both, the time per iteration and the normalizer each layer selected.
"""
import argparse
import json
import math
import time
from pathlib import Path

import torch
from detectron2.utils import comm

import ssn_plugins as S
import ssn_plugins.detectron2 as sd
from ssn_plugins.datasets.real_mini import write_coco
from train_net import REAL_MINI_ROOT, Trainer, setup

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "detectron2" / "real_mini" / "mask_rcnn_R_50_FPN_ssn.yaml"


def ap_summary(results) -> dict:
    """``{"bbox": AP, "segm": AP}`` from detectron2's results for the one test set (it returns them unnested).

    A model that detects nothing gets no results from COCOEvaluator (or NaN): its AP is 0, as COCO counts it
    when there are ground-truth instances.
    """
    def ap(task):
        value = float((results or {}).get(task, {}).get("AP", float("nan")))
        return 0.0 if math.isnan(value) else round(value, 2)

    return {"bbox": ap("bbox"), "segm": ap("segm")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=str(DEFAULT_CONFIG))
    parser.add_argument("--data", type=Path, default=REAL_MINI_ROOT)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args()
    args.resume, args.eval_only, args.num_gpus = False, False, 1
    if not torch.cuda.is_available():
        args.opts = ["MODEL.DEVICE", "cpu", *args.opts]

    if not (args.data / "annotations" / "instances_val.json").exists():
        write_coco(args.data)
    sd.register_real_mini(args.data)  # before setup(), which registers REAL_MINI_ROOT only if not yet done
    cfg = setup(args)

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    before = ap_summary(Trainer.test(cfg, trainer.model))
    start = time.time()
    trainer.train()  # the hooks recompute batch-average statistics, then EvalHook evaluates
    seconds = time.time() - start
    # DefaultTrainer.train() returns EvalHook's results only when TEST.EXPECTED_RESULTS is set
    after = ap_summary(trainer._last_eval_results)
    if not comm.is_main_process():
        return
    iterations = cfg.SOLVER.MAX_ITER
    rows = S.describe_selection(trainer.model)
    print("\nnormalizer per layer:")
    print(S.format_selection(rows))
    # detectron2's IterationTimer: training iterations only (not the final batch averaging and evaluation);
    # it skips its first few warm-up iterations, so a very short run has no figure
    timer = trainer.storage.histories().get("time")
    per_iteration = None if timer is None else round(timer.global_avg(), 2)
    summary = {"ap_before": before, "ap_after": after, "iterations": iterations,
               "seconds_per_iteration": per_iteration, "seconds_train_and_final_eval": round(seconds),
               "selections": S.count_selections(rows)}
    Path(cfg.OUTPUT_DIR, "real_mini_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nCOCO AP on the real mini set before training: box {before.get('bbox')}, mask {before.get('segm')}")
    print(f"COCO AP after {iterations} iterations: box {after.get('bbox')}, mask {after.get('segm')}")
    print(f"selected normalizers (SSN ratio vectors): {summary['selections']}")
    timing = "too few iterations to time" if per_iteration is None else f"{per_iteration} s per training iteration"
    print(f"{timing} on this machine; {seconds:.0f} s for training with the final batch averaging and evaluation")


if __name__ == "__main__":
    main()
