"""detectron2 training and evaluation with SN/SSN norms: detectron2's ``tools/train_net.py`` plus the plugin.

    python tools/train_net.py --config-file configs/detectron2/mask_rcnn_R_50_FPN_2x_ssn.yaml --num-gpus 8
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS work_dirs/x/model_final.pth
    python tools/train_net.py --config-file ... --resume

The plugin is imported before the config is read; ``_BASE_: "detectron2://..."``
inherits detectron2's own model-zoo configs. Batch-average statistics are
recomputed before every evaluation (``MODEL.SSN.INFERENCE_STATS``), and with
``--eval-only`` before testing.
"""
import logging
import os
from pathlib import Path

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, hooks, launch
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import COCOEvaluator, verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import ssn_plugins.detectron2 as ssn_d2  # registers the norm names before any config is read
from ssn_plugins import reopen_selections
from ssn_plugins.datasets.real_mini import write_coco

#: where configs that name ``real_mini_train`` / ``real_mini_val`` find the set (built there if missing)
REAL_MINI_ROOT = Path(os.environ.get("SSN_REAL_MINI", "datasets/real_mini"))

logger = logging.getLogger("ssn_plugins.train_net")


def _create_ddp_model_on_any_device(model, **kwargs):
    # detectron2 always passes device_ids=[local rank], which DDP rejects for a CPU model
    # (a gloo run on CPU); a CPU model gets none.
    if next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return _create_ddp_model(model, **kwargs)


_create_ddp_model = d2_defaults.create_ddp_model
d2_defaults.create_ddp_model = _create_ddp_model_on_any_device


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with the SN/SSN optimizer rules, frozen-stage handling and hooks."""

    @classmethod
    def build_optimizer(cls, cfg, model):
        return ssn_d2.build_ssn_optimizer(cfg, model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return COCOEvaluator(dataset_name, output_dir=output_folder or f"{cfg.OUTPUT_DIR}/inference")

    def build_hooks(self):
        hook_list = super().build_hooks()
        ours = ssn_d2.ssn_hooks(self.cfg, self.model, lambda: build_detection_train_loader(self.cfg))
        # before EvalHook, so evaluation sees fresh batch-average statistics
        position = next((i for i, h in enumerate(hook_list) if isinstance(h, hooks.EvalHook)), len(hook_list))
        return hook_list[:position] + ours + hook_list[position:]

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume)
        if self.cfg.MODEL.SSN.REOPEN_SELECTION and not (resume and self.checkpointer.has_checkpoint()):
            count = reopen_selections(self.model)
            logger.info("re-opened the SSN selections of the loaded weights in %d layers (frozen ones keep theirs)",
                        count)


def load_config(args):
    cfg = get_cfg()
    ssn_d2.add_ssn_config(cfg)
    ssn_d2.merge_config_file(cfg, args.config_file)
    cfg.merge_from_list(args.opts)
    return cfg


def uses_real_mini(cfg) -> bool:
    return any(name.startswith("real_mini") for name in tuple(cfg.DATASETS.TRAIN) + tuple(cfg.DATASETS.TEST))


def setup(args):
    cfg = load_config(args)
    if uses_real_mini(cfg):
        ssn_d2.register_real_mini(REAL_MINI_ROOT)
    cfg.freeze()
    default_setup(cfg, args)  # sets up detectron2's loggers; ours (re-opening, batch averages) beside them
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="ssn_plugins", abbrev_name="ssn")
    return cfg


def main(args):
    cfg = setup(args)
    ssn_d2.validate_ssn_config(cfg)  # before building anything, not at the first evaluation
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        if cfg.MODEL.SSN.INFERENCE_STATS == "batch_average":
            ssn_d2.recompute_detection_statistics(model, iter(build_detection_train_loader(cfg)),
                                                  cfg.MODEL.SSN.BATCH_AVERAGE_ITERS)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    if uses_real_mini(load_config(args)) and not (REAL_MINI_ROOT / "annotations" / "instances_heldout.json").exists():
        write_coco(REAL_MINI_ROOT, heldout=True)  # once, before the worker processes start
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
