"""detectron2's ``DefaultTrainer`` with the SN/SSN recipe, and the setup a ``train_net.py`` needs.

``tools/train_net.py`` is detectron2's own script around these, as in
detectron2's ``projects/``. Importing this module changes nothing in
detectron2: the CPU fallback for ``create_ddp_model`` is in force only while
a :class:`Trainer` is built.
"""
import contextlib
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Iterator

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_setup, hooks
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config_files import resolve_config
from ..datasets.real_mini import write_coco
from ..radius import reopen_selections
from ..run_identity import describe_detectron2_config
from ..run_record import TEST_RESULTS, current_commit, read_run_record, trained_setting, write_run_record
from .config import add_ssn_config, merge_config_file
from .datasets import register_real_mini
from .hooks import recompute_detection_statistics, ssn_hooks, validate_ssn_config
from .optimizer import build_ssn_optimizer

__all__ = ["Trainer", "load_config", "setup", "evaluate", "real_mini_root", "uses_real_mini", "prepare_real_mini"]

logger = logging.getLogger(__name__)


def real_mini_root() -> Path:
    """Where configs that name ``real_mini_train`` / ``real_mini_val`` find the set: ``$SSN_REAL_MINI``,
    default ``datasets/real_mini`` (built there when missing)."""
    return Path(os.environ.get("SSN_REAL_MINI", "datasets/real_mini"))


@contextlib.contextmanager
def _ddp_on_any_device() -> Iterator[None]:
    # detectron2's create_ddp_model always passes device_ids=[local rank], which DDP rejects for a
    # CPU model (a gloo run on CPU): within this context a CPU model gets none.
    original = d2_defaults.create_ddp_model

    def create_ddp_model(model, **kwargs):
        if next(model.parameters()).device.type == "cpu":
            kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    d2_defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = original


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with the SN/SSN optimizer rules, the hooks of ``cfg.MODEL.SSN``, re-opened
    selections (``REOPEN_SELECTION``), COCO evaluation, and DDP on CPU (gloo) as well as on GPUs."""

    def __init__(self, cfg):
        validate_ssn_config(cfg)  # before building anything, not at the first evaluation
        with _ddp_on_any_device():
            super().__init__(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_ssn_optimizer(cfg, model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return COCOEvaluator(dataset_name, output_dir=output_folder or f"{cfg.OUTPUT_DIR}/inference")

    def build_hooks(self):
        hook_list = super().build_hooks()
        ours = ssn_hooks(self.cfg, self.model, lambda: build_detection_train_loader(self.cfg))
        # before EvalHook, so evaluation sees fresh batch-average statistics
        position = next((i for i, h in enumerate(hook_list) if isinstance(h, hooks.EvalHook)), len(hook_list))
        return hook_list[:position] + ours + hook_list[position:]

    def train(self):
        """``DefaultTrainer.train`` with ``TEST.EXPECTED_RESULTS`` reported (:func:`report_expected_results`)
        instead of enforced: detectron2 exits 1 after a finished run that misses a figure, and a Slurm job or
        ``tools/reproduce.py`` would call it failed; whether a run reproduced the paper is the leaderboard's say."""
        super(DefaultTrainer, self).train(self.start_iter, self.max_iter)
        results = getattr(self, "_last_eval_results", None)
        if results is not None and comm.is_main_process():
            report_expected_results(self.cfg, results)
        return results

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume)
        if self.cfg.MODEL.SSN.REOPEN_SELECTION and not (resume and self.checkpointer.has_checkpoint()):
            count = reopen_selections(self.model)
            logger.info("re-opened the SSN selections of the loaded weights in %d layers (frozen ones keep theirs)",
                        count)


def load_config(config_file: str, opts=()):
    """detectron2's config with ``add_ssn_config``, the file (detectron2's ``merge_from_file``; or a shipped
    config's name: :func:`ssn_plugins.config_files.resolve_config`) and ``opts``."""
    cfg = get_cfg()
    add_ssn_config(cfg)
    # merge_from_file, with an error naming the fix for a legacy base
    merge_config_file(cfg, resolve_config(config_file))
    cfg.merge_from_list(list(opts))
    return cfg


def uses_real_mini(cfg) -> bool:
    return any(name.startswith("real_mini") for name in tuple(cfg.DATASETS.TRAIN) + tuple(cfg.DATASETS.TEST))


def prepare_real_mini(root: Path) -> None:
    """Build the real mini set at ``root`` if missing (once, before worker processes start)."""
    if not (Path(root) / "annotations" / "instances_heldout.json").exists():
        write_coco(Path(root), heldout=True)


def setup(args):
    """The frozen config of ``args`` (detectron2's ``default_argument_parser``), with detectron2's and our loggers.
    A shipped config's name in ``args.config_file`` becomes its path (detectron2's ``default_setup`` reads it)."""
    args.config_file = resolve_config(args.config_file)
    cfg = load_config(args.config_file, args.opts)
    if uses_real_mini(cfg):
        register_real_mini(real_mini_root())
    cfg.freeze()
    default_setup(cfg, args)  # sets up detectron2's loggers; ours (re-opening, batch averages) beside them
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="ssn_plugins", abbrev_name="ssn")
    if comm.is_main_process():
        record_run(cfg, args.config_file, args.eval_only)
    return cfg


def record_run(cfg, config_file: str, eval_only: bool = False) -> None:
    """Write what this run is into ``OUTPUT_DIR``'s run record: the config's description with the process
    group's real world size. A test (``--eval-only``) records the weights it tests, at the batch setting the
    catalogue says they were trained at, and leaves a training run's record in the same folder alone."""
    world_size = comm.get_world_size()
    described = describe_detectron2_config(cfg, world_size)
    # the script's name: train_net for tools/train_net.py, python -m ssn_plugins.cli.train_net and ssn-train-net
    tool = Path(sys.argv[0]).stem.removeprefix("ssn-").replace("-", "_") or "detectron2"
    fields = dict(tool=tool, config=str(config_file), commit=current_commit(), **described)
    if eval_only:
        existing = read_run_record(cfg.OUTPUT_DIR) or {}
        if existing.get("tool") and not existing.get("evaluated_only"):
            return
        trained = trained_setting(cfg.MODEL.WEIGHTS)
        fields.update(evaluated_only=True, weights=cfg.MODEL.WEIGHTS, pretrained="", gpus=trained[0],
                      images_per_gpu=trained[1])
    write_run_record(cfg.OUTPUT_DIR, **fields)


def evaluate(cfg, resume: bool = False):
    """``--eval-only``: load ``MODEL.WEIGHTS`` (or the last checkpoint), recompute batch-average statistics
    when ``MODEL.SSN.INFERENCE_STATS`` says so (pooled over processes), test and verify the results."""
    validate_ssn_config(cfg)
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    if cfg.MODEL.SSN.INFERENCE_STATS == "batch_average":
        recompute_detection_statistics(model, iter(build_detection_train_loader(cfg)),
                                       cfg.MODEL.SSN.BATCH_AVERAGE_ITERS)
    results = Trainer.test(cfg, model)
    if comm.is_main_process():
        write_test_record(cfg, results)
        report_expected_results(cfg, results)
    return results


def report_expected_results(cfg, results) -> bool:
    """detectron2's ``verify_results`` rule (each ``[task, metric, expected, tolerance]`` of
    ``TEST.EXPECTED_RESULTS``) as warnings, without its ``sys.exit(1)`` nor its ``KeyError`` on a task with no
    result (no detection). Returns whether every figure was met."""
    ok = True
    for task, metric, expected, tolerance in cfg.TEST.EXPECTED_RESULTS:
        actual = results.get(task, {}).get(metric)
        if actual is None or not math.isfinite(actual) or abs(actual - expected) > tolerance:
            ok = False
            found = "no result" if actual is None else f"{actual:.2f}"
            logger.warning("TEST.EXPECTED_RESULTS: %s %s is %s, the figure is %s ± %s (the run itself succeeded; "
                           "the leaderboard compares it)", task, metric, found, expected, tolerance)
    if ok and len(cfg.TEST.EXPECTED_RESULTS):
        logger.info("TEST.EXPECTED_RESULTS: every figure met")
    return ok


def write_test_record(cfg, results) -> None:
    """Append what was tested and its flat results to ``OUTPUT_DIR/test_results.json`` (the schema of
    ``tools/mm_test.py``'s, which the leaderboard reads)."""
    record = {"checkpoint": cfg.MODEL.WEIGHTS, "tta": bool(cfg.TEST.AUG.ENABLED),
              "moving_average": cfg.MODEL.SSN.INFERENCE_STATS == "moving_average",
              # the summary metrics (detectron2 prints these too), not the per-category ones ("bbox/AP-person")
              "metrics": {k: float(v) for k, v in flatten_results_dict(results).items()
                          if isinstance(v, (int, float)) and "-" not in k.rpartition("/")[2]}}
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with open(os.path.join(cfg.OUTPUT_DIR, TEST_RESULTS), "a") as f:
        f.write(json.dumps(record) + "\n")
