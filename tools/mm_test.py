"""Evaluate a trained mmseg / mmdet / mmaction2 checkpoint with the SN/SSN plugin loaded.

    python tools/mm_test.py CONFIG work_dirs/x/iter_80000.pth
    python tools/mm_test.py CONFIG CHECKPOINT --moving-average   # keep the checkpoint's running statistics

By default SN/SSN/BN statistics are first recomputed as averages over training batches
(``BatchAverageStatisticsHook`` in the config; it needs the config's train data). The
checkpoint is read with full unpickling (mmengine's files need it on torch >= 2.6): use files you trust.
"""
import argparse

from ssn_plugins.openmmlab.checkpoint import trusted_checkpoints
from ssn_plugins.openmmlab.runner import add_runner_arguments, build_runner, load_config, parse


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="test config file")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--moving-average", action="store_true",
                        help="test with the checkpoint's running statistics, not batch averages")
    args = parse(add_runner_arguments(parser), argv)
    cfg = load_config(args.config, args.work_dir, args.cfg_options, args.launcher)
    cfg.load_from = args.checkpoint
    if args.moving_average:
        cfg.custom_hooks = [h for h in cfg.get("custom_hooks", []) if h.get("type") != "BatchAverageStatisticsHook"]
    runner = build_runner(cfg)
    with trusted_checkpoints():
        metrics = runner.test()
    return metrics


if __name__ == "__main__":
    main()
