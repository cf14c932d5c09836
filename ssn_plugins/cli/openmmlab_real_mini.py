"""OpenMMLab end to end on real annotated data, on CPU: mIoU (mmseg), COCO AP (mmdet) or top-1 (mmaction2)
before and after, with the shipped configs (``ssn-openmmlab-real-mini``,
``python -m ssn_plugins.cli.openmmlab_real_mini`` or the clone's ``tools/openmmlab_real_mini.py``):

    python tools/openmmlab_real_mini.py seg    # DeepLabV3 R18-D8 + SSN, mmseg's IoUMetric
    python tools/openmmlab_real_mini.py det    # Mask R-CNN R50-FPN + SSN, mmdet's CocoMetric (pycocotools)
    python tools/openmmlab_real_mini.py video  # I3D ResNet3d-50 + SSN3d, 10-clip test, mmaction2's AccMetric
    python tools/openmmlab_real_mini.py seg --cfg-options train_cfg.max_iters=10
    python tools/openmmlab_real_mini.py det --ce  # with Channel Equilibrium in the backbone (ResNetCE)

It builds the real set if missing (tools/build_real_mini_seg.py / build_real_mini_coco.py /
build_real_clips.py), evaluates the freshly initialised model, trains with the config's hooks (radius schedule, ratio
scalars) and takes the training loop's final validation (both evaluations with batch-average
statistics over training batches), and
writes ``summary.json`` in the work directory: the metrics before and after and the seconds per
training iteration (mmengine's IterTimerHook, first two iterations left out). A metric the evaluator did
not return is ``null`` there and reported as such (mmdet's CocoMetric returns none when nothing at all was
detected), never a made-up 0.
"""
import json
import time
from pathlib import Path

import numpy as np
import torch

from mmengine.hooks import Hook

from ssn_plugins.cli import tool_parser
from ssn_plugins.datasets.real_clips import write_kinetics_style
from ssn_plugins.datasets.real_mini import write_coco, write_segmentation
from ssn_plugins.selection import count_selections, describe_selection
from ssn_plugins.openmmlab.channel_equilibrium import with_channel_equilibrium
from ssn_plugins.openmmlab.checkpoint import trusted_checkpoints
from ssn_plugins.openmmlab.hooks import BatchAverageStatisticsHook
from ssn_plugins.optim import unwrapped
from ssn_plugins.openmmlab.runner import add_runner_arguments, build_runner, load_config, parse, record_run

TASKS = {
    # task: (shipped config's name, dataset root the config reads, writer, file that shows the set exists,
    #        reported metrics)
    "seg": ("mmseg/real_mini/deeplabv3_r18-d8_ssn_real-mini-256x256.py", "datasets/real_mini_seg",
            write_segmentation, "ann_dir/val", ("mIoU", "aAcc", "mAcc")),
    "det": ("mmdet/real_mini/mask-rcnn_r50_fpn_ssn-all_real-mini.py", "datasets/real_mini",
            write_coco, "annotations/instances_val.json", ("coco/bbox_mAP", "coco/segm_mAP")),
    "video": ("mmaction/real_clips/i3d_r50_ssn3d_8xb4-8x1x1-200it_real-clips-rgb.py",
              "datasets/real_clips", write_kinetics_style, "real_clips_val_list_videos.txt",
              ("acc/top1", "acc/top2", "acc/mean1")),
}


def reported(metrics: dict, metric_names) -> dict:
    """``{name: value rounded}``, ``None`` for a metric the evaluator did not return."""
    return {name: None if metrics.get(name) is None else round(float(metrics[name]), 4) for name in metric_names}


class FinalMetrics(Hook):
    """Keeps what the training loop's validations (one always runs after the last iteration) report."""

    def __init__(self):
        self.metrics, self.iterations = {}, []

    def after_val_epoch(self, runner, metrics=None):
        self.iterations.append(runner.iter)
        self.metrics = dict(metrics or {})


def evaluate(runner, metric_names) -> dict:
    """The config's validation set and evaluator on the untrained model, with batch-average statistics first.

    Runs outside mmengine's ValLoop so no hook fires (before training, the
    schedulers the val hooks step do not exist yet). A metric the evaluator
    does not return is ``None`` (see :func:`reported`).
    """
    loop = runner.val_loop  # builds the dataloader and evaluator from the config
    for hook in runner.hooks:
        if isinstance(hook, BatchAverageStatisticsHook):
            hook.before_val(runner)
    runner.model.eval()
    with torch.no_grad():
        for batch in loop.dataloader:
            loop.evaluator.process(data_samples=runner.model.val_step(batch), data_batch=batch)
    return reported(loop.evaluator.evaluate(len(loop.dataloader.dataset)), metric_names)


def run(argv=None):
    """Run the job of ``argv`` with the task's shipped config (or ``--config``); returns the summary."""
    parser = tool_parser(__doc__, "openmmlab_real_mini")
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--config", help="another config for the same task")
    parser.add_argument("--ce", action="store_true",
                        help="add Channel Equilibrium to the backbone (type ResNetCE / ResNet3dCE over the config's)")
    args = parse(add_runner_arguments(parser), argv)
    config, data_root, writer, marker, metric_names = TASKS[args.task]
    config = f"configs/{config}"  # a file from the clone's root, else the shipped config of that name
    cfg = load_config(str(args.config or config), args.work_dir, args.cfg_options, args.launcher)
    if args.ce:
        cfg.model.backbone = with_channel_equilibrium(cfg.model.backbone)
    if not Path(data_root, marker).exists():  # the configs read it relative to the working directory
        print(f"building the real {args.task} set in {data_root} ...")
        writer(Path(data_root))
    runner = build_runner(cfg)
    record_run(runner, str(args.config or config), "openmmlab_real_mini")
    final_metrics = FinalMetrics()
    runner.register_hook(final_metrics, priority="LOWEST")
    unwrapped(runner.model).init_weights()  # as runner.train() does; it skips the second call
    before = evaluate(runner, metric_names)
    start = time.time()
    with trusted_checkpoints():
        runner.train()
    seconds = time.time() - start
    final, validated = final_metrics.metrics, final_metrics.iterations
    if not validated:  # the loop validates after its last iteration
        raise SystemExit(f"the training loop reported no validation metrics (val_cfg / val_interval in {config}?)")
    after = reported(final, metric_names)

    times = runner.message_hub.get_scalar("train/time").data[0]
    per_iteration = round(float(np.mean(times[2:])), 2) if len(times) > 2 else None
    summary = {"task": args.task, "config": str(args.config or config), "ce": args.ce,
               "before": before, "after": after, "iterations": runner.iter,
               "seconds_per_iteration": per_iteration, "seconds_train": round(seconds),
               "selections": count_selections(describe_selection(unwrapped(runner.model)))}
    Path(cfg.work_dir, "summary.json").write_text(json.dumps(summary, indent=1))
    missing = sorted({name for metrics in (before, after) for name, v in metrics.items() if v is None})
    print(f"\n{args.task}: before training {before}")
    print(f"{args.task}: after {runner.iter} iterations {after}")
    if missing:
        print(f"{args.task}: the evaluator returned no {', '.join(missing)} (None above): for COCO metrics, "
              f"nothing was detected")
    print(f"{args.task}: selected normalizers (SSN ratio vectors): {summary['selections']}")
    print(f"{per_iteration} s per training iteration on this machine; {seconds:.0f} s for training and the "
          f"final validation")
    return summary


def main(argv=None) -> None:
    """The command line: :func:`run`, which returns the summary, with nothing returned (a console script exits 0)."""
    run(argv)


if __name__ == "__main__":
    main()
