"""The main job: Mask R-CNN R50-FPN with SSN on real annotated images, on CPU, with COCO AP before and after.

    python tools/detectron2_real_mini.py                      # builds datasets/real_mini if missing
    python tools/detectron2_real_mini.py SOLVER.MAX_ITER 40   # config overrides, as for train_net.py
    python tools/detectron2_real_mini.py --resume OUTPUT_DIR work_dirs/x   # continue from its last checkpoint
    python tools/detectron2_real_mini.py --ce                 # with Channel Equilibrium (MODEL.RESNETS.CE.ENABLED)

It builds the real mini set (tools/build_real_mini_coco.py), registers it,
evaluates box and mask AP of the freshly initialised model with detectron2's
COCO evaluator, trains with ``ssn_plugins.detectron2.trainer.Trainer`` (as
tools/train_net.py does: radius schedule, batch-average statistics before the
final evaluation), evaluates again and prints both, the time per iteration and
the normalizer each layer selected. The options are detectron2's
``default_argument_parser``'s (``--config-file``, ``--resume``, ``KEY VALUE``
overrides) plus ``--data`` and ``--ce``.
"""
import json
import math
import time
from pathlib import Path

import torch
from detectron2.engine import default_argument_parser
from detectron2.utils import comm

import ssn_plugins as S
import ssn_plugins.detectron2 as sd
from ssn_plugins.cli import help_text
from ssn_plugins.config_files import config_file
from ssn_plugins.detectron2.compat import last_eval_results
from ssn_plugins.detectron2.trainer import Trainer, prepare_real_mini, real_mini_root, setup

DEFAULT_CONFIG = config_file("detectron2/real_mini/mask_rcnn_R_50_FPN_ssn.yaml")


def ap_summary(results) -> dict:
    """``{"bbox": AP, "segm": AP, "detected": bool}`` from detectron2's results for one test set.

    A model that detects nothing gets a NaN box AP and no mask AP from COCOEvaluator (it runs no COCOeval):
    its AP is 0, as COCO counts it when there are ground-truth instances, and ``detected`` is False. Results
    without a box AP, or with a box AP but no mask AP, mean the evaluation did not run as it should: an error.
    """
    def ap(task):
        if not isinstance((results or {}).get(task), dict) or "AP" not in results[task]:
            raise RuntimeError(f"detectron2's evaluation returned no {task} AP (results: {results!r})")
        return float(results[task]["AP"])

    box = ap("bbox")
    if math.isnan(box):
        return {"bbox": 0.0, "segm": 0.0, "detected": False}
    return {"bbox": round(box, 2), "segm": round(ap("segm"), 2), "detected": True}


def ap_line(ap: dict) -> str:
    """How the job prints one :func:`ap_summary`."""
    return f"box {ap['bbox']}, mask {ap['segm']}" + ("" if ap["detected"] else " (nothing detected)")


def ap_by_dataset(results, datasets) -> dict:
    """``{test set: ap_summary}``: detectron2 nests the results by test set only when there are several."""
    nested = {datasets[0]: results} if len(datasets) == 1 else (results or {})
    missing = [name for name in datasets if name not in nested]
    if missing:
        raise RuntimeError(f"detectron2's evaluation returned no results for {missing} (got {sorted(nested)})")
    return {name: ap_summary(nested[name]) for name in datasets}


def main(argv=None):
    parser = default_argument_parser(epilog=help_text(__doc__, "detectron2_real_mini"))
    parser.set_defaults(config_file=str(DEFAULT_CONFIG))
    parser.add_argument("--data", type=Path, default=real_mini_root(),
                        help="the real mini set (built there if missing; default $SSN_REAL_MINI or datasets/real_mini)")
    parser.add_argument("--ce", action="store_true", help="add Channel Equilibrium to the ResNet (MODEL.RESNETS.CE)")
    args = parser.parse_args(argv)
    if args.eval_only or args.num_gpus != 1 or args.num_machines != 1:
        parser.error("the real-mini job trains and evaluates in one process: use tools/train_net.py for "
                     "--eval-only and several processes")
    if not torch.cuda.is_available():
        args.opts = ["MODEL.DEVICE", "cpu", *args.opts]
    if args.ce:
        args.opts = ["MODEL.RESNETS.CE.ENABLED", "True", *args.opts]

    prepare_real_mini(args.data)
    sd.register_real_mini(args.data)  # before setup(), which registers real_mini_root() only if not yet done
    cfg = setup(args)

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    resumed = trainer.start_iter > 0
    datasets = list(cfg.DATASETS.TEST)
    before = None if resumed else ap_by_dataset(Trainer.test(cfg, trainer.model), datasets)
    start = time.time()
    trainer.train()  # the hooks recompute batch-average statistics, then EvalHook evaluates
    seconds = time.time() - start
    # DefaultTrainer.train() returns EvalHook's results only when TEST.EXPECTED_RESULTS is set
    after = ap_by_dataset(last_eval_results(trainer), datasets)
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
    primary = datasets[0]
    summary = {"ap_before": before and before[primary], "ap_after": after[primary], "test_sets": datasets,
               "ap_before_by_test_set": before, "ap_after_by_test_set": after, "iterations": iterations,
               "seconds_per_iteration": per_iteration, "seconds_train_and_final_eval": round(seconds),
               "selections": S.count_selections(rows)}
    Path(cfg.OUTPUT_DIR, "real_mini_summary.json").write_text(json.dumps(summary, indent=1))
    print()
    for name in datasets:
        where = "the real mini set" if name == primary else name
        if before is not None:
            print(f"COCO AP on {where} before training: {ap_line(before[name])}")
        print(f"COCO AP on {where} after {iterations} iterations: {ap_line(after[name])}")
    print(f"selected normalizers (SSN ratio vectors): {summary['selections']}")
    timing = "too few iterations to time" if per_iteration is None else f"{per_iteration} s per training iteration"
    print(f"{timing} on this machine; {seconds:.0f} s for training with the final batch averaging and evaluation")


if __name__ == "__main__":
    main()
