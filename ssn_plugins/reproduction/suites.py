"""Named lists of runs that reproduce one table, and how each run is launched, skipped or resumed.

A suite's runs are commands of the project's tools (``python -m``; relative paths start at the clone's root, or the
working directory of an installed package: :func:`ssn_plugins.cli.jobs_root`). A run whose
folder holds a finished result (:func:`~ssn_plugins.reproduction.runs.read_run`) is skipped; one with a
partial result is started again with its tool's resume flag; steps after training (mmseg's multi-scale
test) run when their own result is missing.
"""
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .figures import PaperFigure, suite_figure
from ..run_identity import NORM_NAMES
from .runs import FINISHED, Run, read_run


@dataclass
class Step:
    tool: str                       # a name of TOOL_MODULES (the clone's tools/<name>.py)
    args: List[str]                 # WORK is replaced by the run's folder
    resume: List[str] = field(default_factory=list)
    done: Optional[Callable[[Optional[Run]], bool]] = None   # default: the run is finished
    # how a multi-GPU launch runs it: "torchrun", "mmengine" (torchrun, and the tool's --launcher pytorch),
    # "detectron2" (the tool's own --num-gpus), "none" (one process always)
    distributed: str = "torchrun"


@dataclass
class SuiteRun:
    name: str
    norm: str
    gpus: int
    steps: List[Step]
    images_per_gpu: Optional[int] = None   # where the suite's table has figures at several batch settings

    def figure(self, suite: str) -> Optional[PaperFigure]:
        """The paper figure this run of ``suite`` is compared with (its run record names it), or ``None``."""
        norm = PAPER_NORMS.get(self.norm.lower(), self.norm)
        return suite_figure(suite, norm, (self.gpus, self.images_per_gpu))


#: the suites' norm keys (framework names, lower-case) as the papers write them
PAPER_NORMS = {**{key.lower(): value for key, value in NORM_NAMES.items()}, "frozenbn": "BN frozen"}


@dataclass
class Suite:
    name: str
    description: str
    runs: List[SuiteRun]
    needs_data: bool = False


def _finished(run: Optional[Run]) -> bool:
    return run is not None and run.status == FINISHED


def _has_metric(metric: str) -> Callable[[Optional[Run]], bool]:
    return lambda run: run is not None and any(metric in e.metrics for e in run.evaluations)


# --------------------------------------------------------------------------------------------- the suites
FASHION_NORMS = ("BN", "GN", "SN", "SSN")
FASHION_BATCHES = (32, 8, 2)


def fashion_mnist_batch_sizes(ci: bool = False) -> Suite:
    # the same epochs at every batch, lr linear in the batch; batch-average statistics from 100 batches of 32
    size, epochs = (600, 1) if ci else (12000, 1)
    runs = []
    for norm in FASHION_NORMS:
        for batch in FASHION_BATCHES:
            args = ["--norm", norm, "--batch-size", str(batch), "--train-size", str(size), "--epochs", str(epochs),
                    *(["--test-size", "2000"] if ci else []),
                    "--stat-batch-size", "32", "--stat-batches", "10" if ci else "100", "--work-dir", "WORK"]
            runs.append(SuiteRun(f"{norm.lower()}_1x{batch}", norm, 1,
                                 [Step("train_fashion_mnist", args, ["--resume"], distributed="none")]))
    return Suite("fashion-mnist-batch-sizes",
                 "small ResNet on Fashion-MNIST, BN / GN / SN / SSN at 32, 8 and 2 images per batch (1 process)",
                 runs)


#: detectron2 norm settings of the papers' Mask R-CNN baselines (backbone, FPN, box head, mask head)
REAL_MINI_NORMS = {"frozenbn": ("FrozenBN", "", "", ""), "gn": ("GN", "GN", "GN", "GN"),
                   "sn": ("SN", "SN", "SN", "SN"), "ssn": ("SSN", "SSN", "SSN", "SSN")}


def real_mini(ci: bool = False) -> Suite:
    runs = []
    for name, (backbone, fpn, box, mask) in REAL_MINI_NORMS.items():
        # AP on the training photos (does it learn) and on the held-out labelme-examples photos (generalise)
        args = ["MODEL.RESNETS.NORM", backbone, "MODEL.FPN.NORM", fpn, "MODEL.ROI_BOX_HEAD.NORM", box,
                "MODEL.ROI_MASK_HEAD.NORM", mask, "DATASETS.TEST", "('real_mini_val', 'real_mini_heldout')",
                "OUTPUT_DIR", "WORK"]
        if ci:
            args += ["SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(3,)", "SOLVER.WARMUP_ITERS", "1",
                     "MODEL.SSN.BATCH_AVERAGE_ITERS", "2", "INPUT.MIN_SIZE_TRAIN", "(160,)",
                     "INPUT.MAX_SIZE_TRAIN", "224", "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "224",
                     "DATALOADER.NUM_WORKERS", "0"]  # forking loader workers costs more than 4 iterations load
        runs.append(SuiteRun(name, backbone, 1, [Step("detectron2_real_mini", args, ["--resume"],
                                                      distributed="none")]))
    return Suite("real-mini", "detectron2 Mask R-CNN R50-FPN on the real mini set, frozen BN / GN / SN / SSN", runs)


#: ``--ci`` of the GPU suites: the same data roots and launch, a few iterations and a slice of the evaluation set, to
#: check a cluster's path in minutes (the leaderboard calls such a run not comparable: another schedule)
DETECTRON2_CI = ["SOLVER.MAX_ITER", "20", "SOLVER.STEPS", "(15,)", "SOLVER.WARMUP_ITERS", "5",
                 "SOLVER.CHECKPOINT_PERIOD", "20", "MODEL.SSN.BATCH_AVERAGE_ITERS", "5",
                 "DATASETS.TEST", "('coco_2017_val_100',)"]
MMENGINE_CI = ["train_cfg.max_iters=20", "train_cfg.val_interval=20", "default_hooks.checkpoint.interval=20",
               "val_dataloader.dataset.indices=20", "test_dataloader.dataset.indices=20"]
MMENGINE_VIDEO_CI = ["train_cfg.max_epochs=1", "train_dataloader.dataset.indices=64",
                     "val_dataloader.dataset.indices=16", "test_dataloader.dataset.indices=16"]


def _detectron2(name: str, configs: Dict[str, str]) -> Callable[[bool], Suite]:
    def suite(ci: bool = False) -> Suite:
        runs = [SuiteRun(key, key, 8, [Step("train_net", ["--config-file", f"configs/detectron2/{config}",
                                                         "OUTPUT_DIR", "WORK", *(DETECTRON2_CI if ci else [])],
                                            ["--resume"], distributed="detectron2")])
                for key, config in configs.items()]
        return Suite(name, f"detectron2, 8 GPUs x 2 images: {', '.join(configs)}", runs)
    return suite


def coco_released_detectors(ci: bool = False) -> Suite:
    """``--eval-only`` of every trained detector of the catalogue with its shipped config: the release's figures
    from one GPU (``--ci``: on the real mini photos at a small test size, to check the path)."""
    from ..model_zoo import catalogue
    runs = []
    for entry in catalogue().values():
        if entry.task != "detection":
            continue
        args = ["--config-file", entry.config, "--eval-only", "OUTPUT_DIR", "WORK"]
        if ci:
            import torch
            args += ["DATASETS.TEST", "('real_mini_val_coco80',)", "INPUT.MIN_SIZE_TEST", "160",
                     "INPUT.MAX_SIZE_TEST", "224", "MODEL.DEVICE", "cuda" if torch.cuda.is_available() else "cpu"]
        runs.append(SuiteRun(entry.name, entry.architecture["norm"], 1,
                             [Step("train_net", args, distributed="detectron2")]))
    return Suite("coco-released-detectors", "the SN detection release's trained detectors, evaluated (detectron2)",
                 runs)


#: the CPU variant of each released segmentation model's config: the same model on the real mini photos
RELEASED_SEGMENTER_CI = {"configs/mmseg/released/c1-deepsup_r50-d8_sn-8x2_ade20k.py":
                         "configs/mmseg/released/real_mini/c1-deepsup_r50-d8_sn-8x2_real-mini-ade20k.py"}


def ade20k_released_segmenter(ci: bool = False) -> Suite:
    """``tools/mm_test.py`` of the catalogue's trained ADE20K model, single-scale then multi-scale (the release's two
    figures), from one GPU (``--ci``: on the real mini photos in ADE20K's classes)."""
    from ..model_zoo import SCHEME, catalogue
    runs = []
    for entry in catalogue().values():
        if entry.task != "semantic segmentation":
            continue
        config = RELEASED_SEGMENTER_CI[entry.config] if ci else entry.config
        args = [config, SCHEME + entry.name, "--work-dir", "WORK"]
        runs.append(SuiteRun(entry.name, entry.architecture["norm"], 1, [
            Step("mm_test", args, done=_has_metric("mIoU"), distributed="mmengine"),
            Step("mm_test", args + ["--tta"], done=_has_metric("mIoU (ms)"), distributed="mmengine")]))
    return Suite("ade20k-released-segmenter", "the SN segmentation release's trained ADE20K model, evaluated "
                 "single- and multi-scale (mmseg)", runs)


def _mmengine(name: str, pattern: str, norms: Sequence[str], tta: bool = False,
              clip_test: bool = False) -> Callable[[bool], Suite]:
    def suite(ci: bool = False) -> Suite:
        runs = []
        shrink = (MMENGINE_VIDEO_CI if clip_test else MMENGINE_CI) if ci else []
        options = ["--cfg-options", *shrink] if shrink else []
        for norm in norms:
            config = pattern.format(norm=norm)
            # "--resume auto": mm_train's --resume takes an optional path, which would swallow the config
            steps = [Step("mm_train", [config, "--work-dir", "WORK", *options], ["--resume", "auto"],
                          distributed="mmengine")]
            if tta:  # the papers' multi-scale mIoU, from the last checkpoint
                steps.append(Step("mm_test", [config, "WORK/CHECKPOINT", "--tta", "--work-dir", "WORK", *options],
                                  done=_has_metric("mIoU (ms)"), distributed="mmengine"))
            if clip_test:  # the papers' 10-clip test (the configs' test pipeline); training validates on 1 clip
                steps.append(Step("mm_test", [config, "WORK/CHECKPOINT", "--work-dir", "WORK", *options],
                                  done=_has_metric("top1 (10-clip)"), distributed="mmengine"))
            runs.append(SuiteRun(norm, norm, 8, steps))
        return Suite(name, f"{Path(pattern).parent.name}, 8 GPUs: {', '.join(norms)}", runs)
    return suite


def imagenet_r50_batch_sizes(ci: bool = False) -> Suite:
    # the papers' settings; SN at one image per GPU mixes IN and LN only
    settings = [(norm, per_gpu, []) for norm in ("BN", "GN", "SN", "SSN") for per_gpu in (32, 16, 8, 4, 2)]
    settings.append(("SN", 1, ["--no-bn"]))
    shrink = ["--epochs", "1", "--subset", "2000"] if ci else []
    runs = [SuiteRun(f"{norm.lower()}_8x{per_gpu}", norm, 8, [Step(
        "pretrain_imagenet", ["DATA", "--work-dir", "WORK", "--depth", "50", "--norm", norm, *extra,
                              "--batch-setting", f"8,{per_gpu}", "--dataset-name", "ImageNet", *shrink],
        ["--resume"])],
        images_per_gpu=per_gpu)
        for norm, per_gpu, extra in settings]
    return Suite("imagenet-r50-batch-sizes", "ImageNet ResNet-50, BN / GN / SN / SSN at (8,32) ... (8,2)", runs,
                 needs_data=True)


SEG_NORMS = ("syncbn", "gn", "sn", "ssn", "syncssn")
I3D_NORMS = ("bn3d", "gn", "sn3d", "ssn3d", "syncssn3d")

SUITES: Dict[str, Callable[[bool], Suite]] = {
    "fashion-mnist-batch-sizes": fashion_mnist_batch_sizes,
    "real-mini": real_mini,
    "coco-mask-rcnn-2x": _detectron2("coco-mask-rcnn-2x", {
        n: f"mask_rcnn_R_50_FPN_2x_{n}.yaml" for n in ("frozenbn", "gn", "sn", "ssn")}),
    "coco-released-detectors": coco_released_detectors,
    "ade20k-released-segmenter": ade20k_released_segmenter,
    "coco-faster-rcnn-2x": _detectron2("coco-faster-rcnn-2x", {
        n: f"faster_rcnn_R_50_FPN_2x_{n}.yaml" for n in ("sn", "ssn")}),
    "cityscapes-deeplab": _mmengine(
        "cityscapes-deeplab", "configs/mmseg/deeplabv3/deeplabv3_r50-d8_{norm}_8xb2-80k_cityscapes-512x1024.py",
        SEG_NORMS, tta=True),
    "ade20k-deeplab": _mmengine(
        "ade20k-deeplab", "configs/mmseg/deeplabv3/deeplabv3_r50-d8_{norm}_8xb2-160k_ade20k-512x512.py",
        SEG_NORMS, tta=True),
    "cityscapes-pspnet": _mmengine(
        "cityscapes-pspnet", "configs/mmseg/pspnet/pspnet_r50-d8_{norm}_8xb2-80k_cityscapes-512x1024.py",
        SEG_NORMS, tta=True),
    "kinetics-i3d-b8": _mmengine(
        "kinetics-i3d-b8", "configs/mmaction/i3d/i3d_r50_{norm}_8xb8-32x2x1-100e_kinetics400-rgb.py",
        I3D_NORMS, clip_test=True),
    "kinetics-i3d-b4": _mmengine(
        "kinetics-i3d-b4", "configs/mmaction/i3d/i3d_r50_{norm}_8xb4-32x2x1-100e_kinetics400-rgb.py",
        I3D_NORMS, clip_test=True),
    "imagenet-r50-batch-sizes": imagenet_r50_batch_sizes,
}


def get_suite(name: str, ci: bool = False) -> Suite:
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    return SUITES[name](ci)


# --------------------------------------------------------------------------------------------- commands
@dataclass
class Planned:
    run: SuiteRun
    folder: Path
    state: str                       # "finished", "resume", "new"
    commands: List[List[str]]        # what still has to run, in order
    steps: List[Step] = field(default_factory=list)   # the steps of those commands


def _checkpoint_name(folder: Path) -> str:
    pointer = folder / "last_checkpoint"
    return Path(pointer.read_text().strip()).name if pointer.exists() else "latest.pth"


#: the module each step's tool runs as (``python -m``), so a suite launches from an installed package as from a clone
TOOL_MODULES = {
    "train_net": "ssn_plugins.cli.train_net",
    "detectron2_real_mini": "ssn_plugins.cli.detectron2_real_mini",
    "mm_train": "ssn_plugins.cli.mm_train",
    "mm_test": "ssn_plugins.cli.mm_test",
    "pretrain_imagenet": "ssn_plugins.cli.pretrain_imagenet",
    "train_fashion_mnist": "ssn_plugins.cli.train_fashion_mnist",
}


def command(step: Step, folder: Path, repo: Path, launcher: str, gpus: int, resume: bool,
            data: Optional[Path], python: str = sys.executable) -> List[str]:
    replace = {"WORK": str(folder), "DATA": str(data) if data else "DATA"}
    args = []
    for a in step.args:
        if a == "WORK/CHECKPOINT":
            a = str(folder / _checkpoint_name(folder))
        args.append(replace.get(a, a))
    module = TOOL_MODULES[step.tool]
    if launcher == "local" or step.distributed == "none" or gpus == 1:
        base = [python, "-m", module]
    elif step.distributed == "detectron2":
        base = [python, "-m", module, "--num-gpus", str(gpus)]
    else:
        base = [python, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}", "-m", module]
        if step.distributed == "mmengine":
            args += ["--launcher", "pytorch"]
    return base + (step.resume if resume else []) + args


def plan(suite: Suite, work_dir: Path, repo: Path, launcher: str = "local", data: Optional[Path] = None,
         norms: Optional[Sequence[str]] = None) -> List[Planned]:
    """What each run of ``suite`` still needs, from what its folder under ``work_dir`` holds."""
    if suite.needs_data and data is None:
        raise ValueError(f"suite {suite.name!r} needs --data (the data set's root)")
    wanted = None if not norms else {n.lower() for n in norms}
    planned = []
    for run in suite.runs:
        if wanted is not None and run.norm.lower() not in wanted and run.name.lower() not in wanted:
            continue
        folder = work_dir / run.name
        found = read_run(folder) if folder.is_dir() else None
        commands, steps, state = [], [], "finished"
        for i, step in enumerate(run.steps):
            done = (step.done or _finished)(found)
            if done:
                continue
            resume = i == 0 and found is not None
            state = "resume" if resume else ("new" if i == 0 else "next step")
            commands.append(command(step, folder, repo, launcher, run.gpus, resume, data))
            steps.append(step)
            if i == 0:  # later steps wait for training; they are planned again after it ran
                break
        planned.append(Planned(run, folder, state if commands else "finished", commands, steps))
    return planned


def shell_line(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)
