"""ImageNet-style pretraining of SN/SSN/CE ResNets with the published recipe.

Any ImageFolder data set (``DATA/train/<class>/*``, ``DATA/val/<class>/*``).
Single process, or DDP under torchrun (NCCL on GPUs, gloo on CPU):

    python tools/pretrain_imagenet.py DATA --depth 50 --norm SSN --batch-setting 8,32 --work-dir work_dirs/ssn_r50
    torchrun --nproc_per_node 8 tools/pretrain_imagenet.py DATA --norm SyncSSN --batch-setting 8,4 --work-dir ...

The recipe by default: SGD momentum 0.9, lr 0.1 x total batch / 256, 100
epochs with steps at 30/60/90 (or ``--schedule cosine``), weight decay 1e-4,
ratio logits at lr/10 without decay and gradient-norm clipping at 1, the
SparsestMax radius growing linearly over all iterations; optional label
smoothing and warm-up. ``OUT/last.pth`` is written after every epoch
(model, optimizer, schedule, epoch, RNG state); ``--resume`` continues from it.
TensorBoard scalars go to ``OUT/tb``. At the end: batch-average statistics,
top-1/top-5, ``OUT/final.pth`` and exports for detectron2 (``OUT/backbone_d2.pkl``),
OpenMMLab (``OUT/backbone_mm.pth``) and mmaction2 I3D (``OUT/backbone_i3d.pth``).
"""
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torchvision
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import ssn_plugins as S
from ssn_plugins.optim import check_ratio_clip
from ssn_plugins.selection import radius_scalars, ratio_scalars
from ssn_plugins.cli import tool_parser
from ssn_plugins.datasets import imagenet
from ssn_plugins.checkpoints import SWITCHABLE, ConversionError, PublishedModel, save_atomically, to_layout
from ssn_plugins.models import NORMS, ResNet
from ssn_plugins.run_record import current_commit, write_final_metrics, write_run_record

#: arguments that define the model; a resumed run must not change them
ARCHITECTURE_ARGS = ("depth", "norm", "version", "ce", "no_bn", "last_gamma", "ceil_mode_pool")


def parse_args(argv=None):
    p = tool_parser(__doc__, "pretrain_imagenet")
    p.add_argument("data", type=Path, help="ImageFolder root with train/ and val/")
    p.add_argument("--work-dir", type=Path, required=True, help="the run folder (as the other tools name it)")
    m = p.add_argument_group("model")
    m.add_argument("--depth", type=int, default=50, choices=(18, 34, 50, 101))
    m.add_argument("--norm", default="SSN", choices=sorted(NORMS))
    m.add_argument("--version", type=int, default=1, choices=(1, 2))
    m.add_argument("--ce", action="store_true", help="Channel Equilibrium (CE paper placement)")
    m.add_argument("--no-bn", action="store_true", help="SN/SSN with [IN, LN] only (batch size 1 per GPU)")
    m.add_argument("--last-gamma", action="store_true")
    m.add_argument("--ceil-mode-pool", action="store_true", help="the SSN release's stem pooling")
    t = p.add_argument_group("training")
    t.add_argument("--batch-setting", default="8,32", help="GPUs,images per GPU as in the papers (default 8,32)")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--lr", type=float, default=None, help="default 0.1 x GPUs x images per GPU / 256")
    t.add_argument("--schedule", choices=("step", "cosine"), default="step")
    t.add_argument("--steps", default="30,60,90", help="epochs at which the step schedule divides lr by 10")
    t.add_argument("--warmup-epochs", type=float, default=0.0)
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--norm-weight-decay", type=float, default=None, help="default: --weight-decay")
    t.add_argument("--ratio-lr-factor", type=float, default=S.RATIO_LR_FACTOR)
    t.add_argument("--ratio-clip", type=float, default=S.RATIO_CLIP,
                   help="gradient-norm clip of all ratio logits together (default %(default)s)")
    t.add_argument("--no-ratio-clip", dest="ratio_clip", action="store_const", const=None,
                   help="turn ratio-gradient clipping off")
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--image-size", type=int, default=224)
    t.add_argument("--workers", type=int, default=4)
    t.add_argument("--stat-batches", type=int, default=S.BATCH_AVERAGE_BATCHES,
                   help="batches for batch-average statistics (default %(default)s)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--subset", type=int, default=None, metavar="N",
                   help="train and validate on N evenly spaced images of each split (a check run, not the papers')")
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pth if it exists")
    t.add_argument("--stop-after-epochs", type=int, default=None,
                   help="stop (resumably) after this many epochs in this run, e.g. for time-limited jobs")
    t.add_argument("--log-every", type=int, default=20, help="iterations between TensorBoard scalars")
    p.add_argument("--dataset-name", default=None,
                   help="what the data set is, for tools/leaderboard.py (default: the DATA folder's name)")
    args = p.parse_args(argv)
    try:
        args.gpus, args.per_gpu = (int(v) for v in args.batch_setting.split(","))
    except ValueError:
        p.error(f"--batch-setting must be GPUS,IMAGES_PER_GPU, got {args.batch_setting!r}")
    try:
        check_ratio_clip(args.ratio_clip, "--ratio-clip")
    except ValueError as e:
        p.error(f"{e} (--no-ratio-clip)")
    if args.lr is None:
        args.lr = 0.1 * args.gpus * args.per_gpu / 256
    args.steps = [int(s) for s in args.steps.split(",") if s]
    return args


class Distributed:
    """The process group when launched by torchrun; a single process otherwise."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")
        if self.world_size > 1:
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values):
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world_size > 1:
            dist.all_reduce(t)
        return t.tolist()


def candidates(args) -> tuple:
    """The SN/SSN candidate list the arguments ask for."""
    return ("IN", "LN") if args.no_bn else ("IN", "LN", "BN")


def build_model(args) -> ResNet:
    norm_kwargs = {}
    if args.norm in SWITCHABLE:
        norm_kwargs["candidates"] = candidates(args)
    num_classes = len(torchvision.datasets.ImageFolder(args.data / "train").classes)
    return ResNet(args.depth, args.norm, norm_kwargs=norm_kwargs, version=args.version, ce=args.ce,
                  last_gamma=args.last_gamma, ceil_mode_pool=args.ceil_mode_pool, num_classes=num_classes)


def data_loaders(args, ddp: Distributed):
    train_tf = torchvision.transforms.Compose([
        torchvision.transforms.RandomResizedCrop(args.image_size), torchvision.transforms.RandomHorizontalFlip(),
        torchvision.transforms.ToTensor(), torchvision.transforms.Normalize(imagenet.MEAN, imagenet.STD)])
    val_tf = imagenet.eval_transform(args.image_size)
    train = torchvision.datasets.ImageFolder(args.data / "train", train_tf)
    val = torchvision.datasets.ImageFolder(args.data / "val", val_tf)
    if train.classes != val.classes:
        raise SystemExit(f"train/ and val/ have different classes: {train.classes} vs {val.classes}")
    if args.subset:
        train, val = (_evenly_spaced(split, args.subset) for split in (train, val))
    train_sampler = DistributedSampler(train, ddp.world_size, ddp.rank, shuffle=True, seed=args.seed,
                                       drop_last=True) if ddp.world_size > 1 else None
    val_sampler = DistributedSampler(val, ddp.world_size, ddp.rank, shuffle=False) if ddp.world_size > 1 else None
    return train, val, train_sampler, val_sampler, val_tf


def _evenly_spaced(split: torchvision.datasets.ImageFolder, count: int) -> torchvision.datasets.ImageFolder:
    """``split`` cut to ``count`` images spread over its (class-sorted) list, so every class stays in."""
    step = max(1, len(split.samples) // count)
    split.samples = split.imgs = split.samples[::step][:count]
    split.targets = [target for _, target in split.samples]
    return split


def train_loader_for_epoch(train, sampler, args, epoch: int) -> DataLoader:
    # A generator seeded by the epoch makes the shuffle and the workers' seeds reproducible on resume.
    if sampler is not None:
        sampler.set_epoch(epoch)
    generator = torch.Generator().manual_seed(args.seed * 1000 + epoch)
    return DataLoader(train, batch_size=args.per_gpu, shuffle=sampler is None, sampler=sampler,
                      num_workers=args.workers, drop_last=True, generator=generator,
                      persistent_workers=False, pin_memory=torch.cuda.is_available())


def lr_factor(args, iteration: int, iters_per_epoch: int) -> float:
    """The learning-rate multiplier at ``iteration`` (warm-up, then steps or cosine)."""
    epoch = iteration / iters_per_epoch
    if args.warmup_epochs and epoch < args.warmup_epochs:
        return max(epoch / args.warmup_epochs, 1e-3)
    if args.schedule == "cosine":
        progress = (epoch - args.warmup_epochs) / max(args.epochs - args.warmup_epochs, 1e-8)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return 0.1 ** sum(epoch >= s for s in args.steps)


@torch.no_grad()
def evaluate(model, loader, ddp: Distributed):
    model.eval()
    correct1 = correct5 = total = 0
    for images, labels in loader:
        images, labels = images.to(ddp.device), labels.to(ddp.device)
        top1, top5 = imagenet.count_correct(model(images), labels)
        correct1, correct5, total = correct1 + top1, correct5 + top5, total + labels.numel()
    correct1, correct5, total = ddp.sum([correct1, correct5, total])
    return 100 * correct1 / total, 100 * correct5 / total


def export_backbones(model: ResNet, args, out: Path):
    described = PublishedModel.from_model(model)
    for target, name in (("detectron2", "backbone_d2.pkl"), ("openmmlab", "backbone_mm.pth"),
                         ("i3d", "backbone_i3d.pth")):
        try:
            converted, _ = to_layout(described, target)
        except ConversionError as e:
            print(f"no {target} export: {e}")
            continue
        save_atomically(converted, out / name, pickled=target == "detectron2")
        print(f"{target} backbone: {out / name}")


def run_config(args) -> dict:
    """OUT/config.json: the tool and its arguments."""
    return {"tool": "pretrain_imagenet",
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}


def record_run(args, world_size: int) -> None:
    """What the run is, into OUT's run record (tools/leaderboard.py reads it)."""
    write_run_record(args.work_dir, tool="pretrain_imagenet", task="classification",
                     dataset=args.dataset_name or Path(args.data).resolve().name,
                     model=f"ResNet-{args.depth}" + ("" if args.version == 1 else " v2"),
                     norm=args.norm + ("+CE" if args.ce else ""), gpus=world_size, images_per_gpu=args.per_gpu,
                     pretrained="", config=str(args.work_dir / "config.json"), commit=current_commit())


def main(argv=None):
    args = parse_args(argv)
    ddp = Distributed()
    torch.manual_seed(args.seed)
    if ddp.world_size != args.gpus and ddp.main:
        print(f"note: --batch-setting {args.batch_setting} assumes {args.gpus} processes, running {ddp.world_size};"
              f" lr {args.lr:g} follows the batch setting")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    train, val, train_sampler, val_sampler, _ = data_loaders(args, ddp)
    val_loader = DataLoader(val, batch_size=args.per_gpu * 2, sampler=val_sampler, num_workers=args.workers)

    model = build_model(args).to(ddp.device)
    iters_per_epoch = len(train) // (args.per_gpu * ddp.world_size)
    if iters_per_epoch == 0:
        raise SystemExit(f"{len(train)} training images are fewer than one batch of {args.per_gpu} x {ddp.world_size}")
    total_iters = args.epochs * iters_per_epoch
    radius = S.RadiusScheduler(model, total_iters=total_iters) if S.sparse_layers(model) else None
    optimizer = torch.optim.SGD(
        S.param_groups(model, args.lr, args.weight_decay, args.ratio_lr_factor, 0.0, args.norm_weight_decay),
        lr=args.lr, momentum=args.momentum)
    S.install_ratio_clipping(optimizer, model, args.ratio_clip)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(args, it, iters_per_epoch))
    start_epoch, best_top1 = 0, 0.0
    last = args.work_dir / "last.pth"
    if args.resume and last.exists():
        state = torch.load(last, map_location="cpu", weights_only=True)
        changed = [k for k in ARCHITECTURE_ARGS if state["args"].get(k) != getattr(args, k)]
        if changed:
            raise SystemExit(f"cannot resume {last}: it was trained with other {', '.join(changed)}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_top1 = state["epoch"], state["best_top1"]
        torch.set_rng_state(state["rng"])
        if ddp.main:
            print(f"resumed from {last} at epoch {start_epoch}")
    net = model
    if ddp.world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[ddp.local_rank] if ddp.device.type == "cuda"
                                                  else None)
    writer = SummaryWriter(str(args.work_dir / "tb")) if ddp.main else None
    if ddp.main:
        (args.work_dir / "config.json").write_text(json.dumps(run_config(args), indent=1))
        record_run(args, ddp.world_size)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    if ddp.main:
        print(f"ResNet-{args.depth} v{args.version} {args.norm}{' + CE' if args.ce else ''}, "
              f"{len(train)} images, {len(train.classes)} classes, {iters_per_epoch} iterations/epoch, "
              f"batch {args.per_gpu} x {ddp.world_size}, lr {args.lr:g}")

    end_epoch = (args.epochs if args.stop_after_epochs is None
                 else min(args.epochs, start_epoch + args.stop_after_epochs))
    for epoch in range(start_epoch, end_epoch):
        net.train()
        loader = train_loader_for_epoch(train, train_sampler, args, epoch)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not ddp.main, dynamic_ncols=True)
        start = time.time()
        for step, (images, labels) in enumerate(bar):
            iteration = epoch * iters_per_epoch + step
            state = radius.step(iteration) if radius else {"radius": 0.0, "fixed": 0, "layers": 0}
            images, labels = images.to(ddp.device, non_blocking=True), labels.to(ddp.device, non_blocking=True)
            logits = net(images)
            loss = criterion(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ddp.main and (step % args.log_every == 0 or step == iters_per_epoch - 1):
                top1 = (logits.argmax(1) == labels).float().mean().item() * 100
                bar.set_postfix(loss=f"{loss.item():.3f}", top1=f"{top1:.1f}", radius=f"{state['radius']:.2f}")
                for tag, value in (("train/loss", loss.item()), ("train/top1", top1),
                                   ("lr", optimizer.param_groups[-1]["lr"]), *radius_scalars(state).items(),
                                   *ratio_scalars(model).items()):
                    writer.add_scalar(tag, value, iteration)
        top1, top5 = evaluate(net, val_loader, ddp)
        best_top1 = max(best_top1, top1)
        if ddp.main:
            print(f"epoch {epoch + 1}: val top-1 {top1:.2f} %, top-5 {top5:.2f} % (moving averages), "
                  f"{time.time() - start:.0f} s")
            writer.add_scalar("val/top1", top1, (epoch + 1) * iters_per_epoch)
            writer.add_scalar("val/top5", top5, (epoch + 1) * iters_per_epoch)
            save_atomically({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "best_top1": best_top1, "rng": torch.get_rng_state(),
                             "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}},
                            last)
    if end_epoch < args.epochs:
        if ddp.main:
            print(f"stopped after epoch {end_epoch} of {args.epochs}; continue with --resume")
        return

    if radius:
        radius.step(total_iters)
    used = S.recompute_batch_statistics(
        model, (images.to(ddp.device) for images, _ in train_loader_for_epoch(train, train_sampler, args, args.epochs)),
        args.stat_batches)  # pooled over the processes
    top1, top5 = evaluate(net, val_loader, ddp)
    if ddp.main:
        print(f"final: val top-1 {top1:.2f} %, top-5 {top5:.2f} % (batch-average statistics over {used} batches)")
        if S.sparse_layers(model):
            print(S.format_selection(S.describe_selection(model)))
        torch.save({"state_dict": model.state_dict(), "meta": {"top1": top1, "top5": top5,
                                                                "args": {k: str(v) for k, v in vars(args).items()}}},
                   args.work_dir / "final.pth")
        write_final_metrics(args.work_dir, {"top1": top1, "top5": top5, "epochs": args.epochs}, total_iters)
        export_backbones(model, args, args.work_dir)
        writer.add_scalar("val/top1_batch_average", top1, total_iters)
        writer.close()
    if ddp.world_size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
