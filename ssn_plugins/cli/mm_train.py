"""Train an mmseg / mmdet / mmaction2 model with the SN/SSN plugin loaded.

The plain route needs none of this: a config that inherits configs/_base_/ssn_runtime.py (its custom_imports
load the plugin) trains with OpenMMLab's own tools, e.g. ``mim train mmseg CONFIG`` (mmseg's
``.mim/tools/train.py``), resume and test included. This wrapper adds what those tools lack: a clear
refusal, naming the file, of a checkpoint that weights-only loading cannot read, full unpickling only for the
files given to ``--trust-checkpoint``, and multi-process runs on CPU (gloo, DDP without device ids).

    python tools/mm_train.py configs/mmseg/deeplabv3/deeplabv3_r50-d8_ssn_8xb2-80k_cityscapes-512x1024.py
    python tools/mm_train.py CONFIG --work-dir work_dirs/x --resume            # latest checkpoint in work_dir
    python tools/mm_train.py CONFIG --resume work_dirs/x/iter_8000.pth --cfg-options train_cfg.max_iters=100
    torchrun --nproc-per-node 2 tools/mm_train.py CONFIG --launcher pytorch    # gloo on CPU, nccl on GPUs

Every local checkpoint (``--resume``, ``load_from``, a backbone's ``init_cfg`` / ``pretrained``) is read
weights-only; mmengine's own checkpoint objects are allow-listed, so resuming needs nothing more. A file that
holds other objects is refused with its name and what it imports; ``--trust-checkpoint FILE`` (repeatable)
reads exactly that file with full unpickling: only for files you trust.
"""

from ssn_plugins.cli import tool_parser
from ssn_plugins.openmmlab.checkpoint import trusted_checkpoints
from ssn_plugins.openmmlab.runner import add_runner_arguments, build_runner, load_config, parse, record_run


def main(argv=None):
    parser = tool_parser(__doc__, "mm_train")
    parser.add_argument("config", help="train config file")
    parser.add_argument("--resume", nargs="?", const="auto",
                        help="resume from a checkpoint, or from the latest in the work dir when no path is given")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (AmpOptimWrapper)")
    parser.add_argument("--trust-checkpoint", action="append", default=[], metavar="FILE",
                        help="read this local checkpoint with full unpickling (repeatable; only files you trust)")
    args = parse(add_runner_arguments(parser), argv)
    cfg = load_config(args.config, args.work_dir, args.cfg_options, args.launcher)
    if args.amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    runner = build_runner(cfg)
    record_run(runner, args.config, "mm_train")
    with trusted_checkpoints(args.trust_checkpoint):
        runner.train()


if __name__ == "__main__":
    main()
