"""Evaluate a trained mmseg / mmdet / mmaction2 checkpoint with the SN/SSN plugin loaded.

The plain route is OpenMMLab's own, e.g. ``mim test mmseg CONFIG --checkpoint CKPT`` (the config's
custom_imports load the plugin, and its BatchAverageStatisticsHook recomputes the statistics). This wrapper
adds: ``--tta`` that keeps the model's own data preprocessor for the batch averages, ``--moving-average``,
``--trust-pickle`` for a checkpoint you trust, and the results file ``tools/leaderboard.py`` reads.

    python tools/mm_test.py CONFIG work_dirs/x/iter_80000.pth
    python tools/mm_test.py CONFIG CHECKPOINT --tta              # mmseg's multi-scale + flip test (the papers' "ms")
    python tools/mm_test.py CONFIG CHECKPOINT --moving-average   # keep the checkpoint's running statistics

By default SN/SSN/BN statistics are first recomputed as averages over training batches
(``BatchAverageStatisticsHook`` in the config; it needs the config's train data). ``--tta`` runs the
config's ``tta_pipeline`` (mmseg's dataset bases: scales 0.5-1.75 and flips) through its ``tta_model``
(``SegTTAModel``), as mmseg's own ``tools/test.py --tta``. The metrics are appended, with the checkpoint
and whether TTA was on, to ``WORK_DIR/test_results.json`` (one JSON object per line), which
``tools/leaderboard.py`` reads. The checkpoint is read weights-only (mmengine's own objects allow-listed): a
file holding other objects is refused with its name, unless ``--trust-pickle`` (only for files you trust).
"""
import json
import os.path as osp

from ssn_plugins.cli import tool_parser
from ssn_plugins.run_record import TEST_RESULTS
from ssn_plugins.openmmlab.checkpoint import trusted_checkpoints
from ssn_plugins.openmmlab.runner import add_runner_arguments, build_runner, load_config, parse, record_run


def use_tta(cfg) -> None:
    """Swap in the config's test-time augmentation, as mmseg's tools/test.py --tta does."""
    missing = [key for key in ("tta_pipeline", "tta_model") if cfg.get(key) is None]
    if missing:
        raise SystemExit(f"--tta needs {' and '.join(missing)} in the config (mmseg's dataset and runtime "
                         f"bases define them)")
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    # the Runner would give the wrapper the config's top-level data_preprocessor, which replaces the model's
    # own (its training crop size): batch-average statistics run training forwards and need the model's
    cfg.tta_model.data_preprocessor = cfg.model.get("data_preprocessor")
    cfg.model = cfg.tta_model


def clips_per_video(cfg) -> int:
    """How many clips per video the test pipeline samples (1 for images)."""
    pipeline = (cfg.get("test_dataloader") or {}).get("dataset", {}).get("pipeline", [])
    return max((t.get("num_clips", 1) for t in pipeline if t.get("type") == "SampleFrames"), default=1)


def run(argv=None):
    parser = tool_parser(__doc__, "mm_test")
    parser.add_argument("config", help="test config file")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--tta", action="store_true", help="multi-scale and flip test (mmseg configs)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="read the checkpoint with full unpickling (only for a file you trust)")
    parser.add_argument("--moving-average", action="store_true",
                        help="test with the checkpoint's running statistics, not batch averages")
    args = parse(add_runner_arguments(parser), argv)
    cfg = load_config(args.config, args.work_dir, args.cfg_options, args.launcher)
    cfg.load_from = args.checkpoint
    if args.tta:
        use_tta(cfg)
    if args.moving_average:
        cfg.custom_hooks = [h for h in cfg.get("custom_hooks", []) if h.get("type") != "BatchAverageStatisticsHook"]
    runner = build_runner(cfg)
    # a local file by its absolute path; a name (ssn://NAME, an URL) as it was given
    checkpoint = args.checkpoint if "://" in args.checkpoint else osp.abspath(args.checkpoint)
    record_run(runner, args.config, "mm_test", tested_weights=checkpoint)
    with trusted_checkpoints([args.checkpoint] if args.trust_pickle else []):
        metrics = runner.test()
    if runner.rank == 0:
        record = {"checkpoint": checkpoint, "tta": args.tta, "clips": clips_per_video(cfg),
                  # the trained running averages, unless the config's hook recomputed batch averages before the test
                  "moving_average": not any(h.get("type") == "BatchAverageStatisticsHook"
                                            for h in cfg.get("custom_hooks", [])),
                  "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
        with open(osp.join(cfg.work_dir, TEST_RESULTS), "a") as f:
            f.write(json.dumps(record) + "\n")
    return metrics


def main(argv=None) -> None:
    """The command line: :func:`run`, which returns the metrics, with nothing returned (a console script exits 0)."""
    run(argv)


if __name__ == "__main__":
    main()
