"""detectron2 training and evaluation with SN/SSN norms: detectron2's ``tools/train_net.py`` plus the plugin
(installed: ``ssn-train-net``; ``--config-file`` takes a file or a shipped config's name, ``ssn-configs`` lists them).

    python tools/train_net.py --config-file configs/detectron2/mask_rcnn_R_50_FPN_2x_ssn.yaml --num-gpus 8
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS work_dirs/x/model_final.pth
    python tools/train_net.py --config-file ... --resume

The trainer is :class:`ssn_plugins.detectron2.trainer.Trainer` (detectron2's
``DefaultTrainer`` with the SN/SSN recipe); the configs load with detectron2's
``merge_from_file``. Batch-average statistics are recomputed before every
evaluation (``MODEL.SSN.INFERENCE_STATS``), and with ``--eval-only`` before testing.
"""
from detectron2.engine import default_argument_parser, launch

from ssn_plugins.detectron2.trainer import (Trainer, evaluate, load_config, prepare_real_mini, real_mini_root,
                                            setup, uses_real_mini)


def run(args):
    """One process's job (detectron2's ``launch`` starts it once per GPU)."""
    cfg = setup(args)
    if args.eval_only:
        return evaluate(cfg, resume=args.resume)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def main(argv=None) -> None:
    args = default_argument_parser().parse_args(argv)
    if uses_real_mini(load_config(args.config_file, args.opts)):
        prepare_real_mini(real_mini_root())  # once, before the worker processes start
    launch(run, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    main()
