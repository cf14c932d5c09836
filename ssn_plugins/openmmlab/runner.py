"""Building an mmengine ``Runner`` from a config, as OpenMMLab's ``tools/train.py`` does, for any scope."""
import argparse
import os
import os.path as osp
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..config_files import resolve_config
from ..run_identity import describe_mmengine_config
from ..run_record import current_commit, read_run_record, trained_setting, write_run_record


def add_runner_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments OpenMMLab's tools share: ``--work-dir``, ``--cfg-options``, ``--launcher``, ``--local-rank``."""
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default: ./work_dirs/<config name>)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction,
                        help="override config entries, key=value (e.g. train_cfg.max_iters=100)")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none",
                        help="job launcher (torchrun: pytorch)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    return parser


def load_config(path: str, work_dir: Optional[str] = None, cfg_options: Optional[dict] = None,
                launcher: str = "none") -> Config:
    """Read ``path`` (a file, or a shipped config's name: :func:`ssn_plugins.config_files.resolve_config`) and
    apply the command-line settings.

    Without CUDA the distributed backend becomes ``gloo`` (the upstream
    configs name ``nccl``, which needs GPUs) and the DDP wrapper gets no
    ``device_ids``, so multi-process runs work on CPU.
    """
    os.environ.setdefault("LOCAL_RANK", "0")
    path = resolve_config(path)
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(path))[0])
    if not torch.cuda.is_available():
        cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "gloo"
        if launcher != "none" and cfg.get("model_wrapper_cfg") is None:
            # the Runner's default wrapper passes device_ids=[LOCAL_RANK], which DDP rejects for a CPU model
            cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None,
                                         broadcast_buffers=False,
                                         find_unused_parameters=cfg.get("find_unused_parameters", False))
    return cfg  # (the layers are registered: importing this module ran ssn_plugins.openmmlab's registration)


def build_runner(cfg: Config) -> Runner:
    """``Runner.from_cfg``, or the registered runner a config names with ``runner_type``.

    Without CUDA a launched run's process group is created here (gloo), since
    mmengine's ``init_dist`` calls ``torch.cuda.set_device`` unconditionally;
    the Runner then finds it initialised and uses it.
    """
    if cfg.launcher != "none" and not torch.cuda.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)


def parse(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` and export ``LOCAL_RANK`` for launchers that pass ``--local-rank``."""
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def record_run(runner: Runner, config_file: str, tool: str, tested_weights: Optional[str] = None) -> None:
    """Write what this run is into the work directory's run record (rank 0): the config's description with the
    runner's real world size. A test (``tested_weights``) records the weights it tests, at the batch setting the
    catalogue says they were trained at, and leaves a training run's record in the same folder alone."""
    if runner.rank != 0:
        return
    fields = dict(tool=tool, config=str(config_file), commit=current_commit(), **describe_mmengine_config(runner.cfg))
    if tested_weights is None:
        fields.update(gpus=runner.world_size)
    else:
        existing = read_run_record(runner.work_dir) or {}
        if existing.get("tool") and not existing.get("evaluated_only"):
            return
        trained = trained_setting(tested_weights)
        fields.update(evaluated_only=True, weights=tested_weights, pretrained="", gpus=trained[0],
                      images_per_gpu=trained[1])
    write_run_record(runner.work_dir, **fields)
