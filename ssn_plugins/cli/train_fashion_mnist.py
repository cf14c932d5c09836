"""Train a small ResNet with Sparse Switchable Normalization on Fashion-MNIST (real data, CPU).

The data come from Debian's ``dataset-fashion-mnist`` package (installed here
with apt-get when missing and running as root) and are read with
torchvision's ``FashionMNIST``. The run follows the published SSN recipe at
small scale: SparsestMax radius growing linearly over all iterations, ratio
logits at lr/10 without weight decay and gradient-norm clipping at 1, and
batch-average BN statistics before evaluation. It prints test accuracy and
the normalizer each layer selected.

    python tools/train_fashion_mnist.py                 # SSN, about 2 minutes on 2 cores
    python tools/train_fashion_mnist.py --norm SN       # or BN / GN / SSN
    python tools/train_fashion_mnist.py --norm BN --batch-size 2 --train-size 12000 --work-dir work_dirs/fm_bn_1x2

The learning rate scales linearly with the batch (``--base-lr`` per 64 images)
unless ``--lr`` is given. With ``--work-dir`` the run writes ``config.json`` (its
arguments) at the start, ``last.pth`` after every epoch (``--resume`` continues
from it), TensorBoard scalars under ``tb/``, and at the end ``final.pth`` (the
model's state dict) and ``metrics.json`` -- what ``tools/leaderboard.py`` and
``tools/analyze_selection.py`` read.
"""
import json
import random
import time
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Subset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import ssn_plugins as S
from ssn_plugins.selection import radius_scalars, ratio_scalars
from ssn_plugins.checkpoints import save_atomically
from ssn_plugins.cli import tool_parser
from ssn_plugins.datasets.fashion_mnist import fashion_mnist_root
from ssn_plugins.run_record import current_commit, write_final_metrics, write_run_record

#: images per batch at which --base-lr applies; other batches scale it linearly
BASE_BATCH = 64

class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = norm(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          norm(out_channels))

    def forward(self, x):
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + (x if self.shortcut is None else self.shortcut(x)))


def small_resnet(norm, widths=(16, 32, 64), num_classes=10) -> nn.Module:
    """A ResNet for 28x28 images: a 3x3 stem and one basic block per stage."""
    layers = [nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), norm(widths[0]), nn.ReLU(inplace=True)]
    in_channels = widths[0]
    for i, width in enumerate(widths):
        layers.append(BasicBlock(in_channels, width, 1 if i == 0 else 2, norm))
        in_channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes)]
    return nn.Sequential(*layers)


NORMS = {
    "BN": nn.BatchNorm2d,
    "GN": lambda c: nn.GroupNorm(min(16, c // 4), c),
    "SN": S.SwitchNorm2d,
    "SSN": S.SparseSwitchNorm2d,
}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    for images, labels in loader:
        correct += (model(images).argmax(1) == labels).sum().item()
        total += labels.numel()
    return 100.0 * correct / total


def balanced_subset(dataset, size: int):
    """The first ``size / 10`` training images of each class (deterministic), or all of them."""
    if size <= 0 or size >= len(dataset):
        return dataset
    per_class = size // 10
    taken, indices = [0] * 10, []
    for index, label in enumerate(dataset.targets.tolist()):
        if taken[label] < per_class:
            taken[label] += 1
            indices.append(index)
    return Subset(dataset, indices)


def parse_args(argv=None):
    parser = tool_parser(__doc__, "train_fashion_mnist")
    parser.add_argument("--norm", choices=sorted(NORMS), default="SSN")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the training images")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (one process)")
    parser.add_argument("--train-size", type=int, default=0,
                        help="train on the first N/10 images of each class (0: all 60k)")
    parser.add_argument("--test-size", type=int, default=0,
                        help="test on this many test images, balanced over the classes (default: all 10000)")
    parser.add_argument("--lr", type=float, default=None, help=f"default --base-lr x batch / {BASE_BATCH}")
    parser.add_argument("--base-lr", type=float, default=0.1, help=f"learning rate at {BASE_BATCH} images per batch")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--stat-batches", type=int, default=50, help="batches for batch-average statistics")
    parser.add_argument("--stat-batch-size", type=int, default=None,
                        help="images per batch-average batch (default: --batch-size)")
    parser.add_argument("--data", type=Path, default=None,
                        help="where the decompressed Fashion-MNIST files go (default $SSN_PLUGINS_CACHE/data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=None, help="write config, checkpoints and metrics here")
    parser.add_argument("--resume", action="store_true", help="continue from WORK_DIR/last.pth if it exists")
    parser.add_argument("--stop-after-epochs", type=int, default=None,
                        help="stop (resumably, with --work-dir) after this many epochs in this run")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.epochs <= 0:
        parser.error("--batch-size must be >= 1 and --epochs > 0")
    if (args.resume or args.stop_after_epochs) and args.work_dir is None:
        parser.error("--resume and --stop-after-epochs need --work-dir")
    if args.lr is None:
        args.lr = args.base_lr * args.batch_size / BASE_BATCH
    args.stat_batch_size = args.stat_batch_size or args.batch_size
    return args


def run_config(args) -> dict:
    """config.json: the tool and its arguments (a resumed run checks them)."""
    return {"tool": "train_fashion_mnist",
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}


def record_run(args) -> None:
    """What the run is, into the work folder's run record (tools/leaderboard.py reads it)."""
    write_run_record(args.work_dir, tool="train_fashion_mnist", task="classification", dataset="Fashion-MNIST",
                     model="small ResNet", norm=args.norm, gpus=1, images_per_gpu=args.batch_size, pretrained="",
                     config=str(args.work_dir / "config.json"), commit=current_commit())


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    root = fashion_mnist_root(args.data)
    to_tensor = torchvision.transforms.Compose([
        torchvision.transforms.ToTensor(), torchvision.transforms.Normalize((0.286,), (0.353,))])
    train_set = torchvision.datasets.FashionMNIST(root, train=True, transform=to_tensor, download=False)
    test_set = torchvision.datasets.FashionMNIST(root, train=False, transform=to_tensor, download=False)
    train_set = balanced_subset(train_set, args.train_size)
    test_set = balanced_subset(test_set, args.test_size)
    # the shuffling generator is saved in last.pth, so a resumed run sees the same batches
    shuffle = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=shuffle)
    stat_loader = DataLoader(train_set, batch_size=args.stat_batch_size, shuffle=True, drop_last=True,
                             generator=torch.Generator().manual_seed(args.seed + 1))
    test_loader = DataLoader(test_set, batch_size=500)

    model = small_resnet(NORMS[args.norm])
    optimizer = torch.optim.SGD(
        S.param_groups(model, lr=args.lr, weight_decay=args.weight_decay, norm_weight_decay=0.0),
        lr=args.lr, momentum=0.9, nesterov=True)
    S.install_ratio_clipping(optimizer, model)  # the published recipe: norm 1
    iters_per_epoch = len(train_loader)
    total_iters = max(1, int(args.epochs * iters_per_epoch))
    lr_schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_iters, pct_start=0.15)
    radius = S.RadiusScheduler(model, total_iters=total_iters)
    iteration = 0
    work_dir, writer = args.work_dir, None
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        last = work_dir / "last.pth"
        if args.resume and last.exists():
            state = torch.load(last, weights_only=False)
            if state["config"]["args"]["norm"] != args.norm or state["total_iters"] != total_iters:
                raise SystemExit(f"{last} is a different run (norm or length differs); use another --work-dir")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            lr_schedule.load_state_dict(state["lr_schedule"])
            shuffle.set_state(state["shuffle"])
            torch.set_rng_state(state["torch_rng"])
            iteration = state["iteration"]
            print(f"resumed from {last} at iteration {iteration}")
        (work_dir / "config.json").write_text(json.dumps(run_config(args), indent=1))
        record_run(args)
        writer = SummaryWriter(str(work_dir / "tb"))
    print(f"{args.norm} small ResNet, {sum(p.numel() for p in model.parameters())} parameters, "
          f"{total_iters} iterations of batch {args.batch_size}, lr {args.lr:g}")

    start = time.time()
    started_at = iteration
    progress = tqdm(total=total_iters, initial=iteration, unit="it", dynamic_ncols=True)
    model.train()
    while iteration < total_iters:
        for images, labels in train_loader:
            if iteration == total_iters:
                break
            state = radius.step(iteration)
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr_schedule.step()
            iteration += 1
            progress.update()
            if iteration % 20 == 0:
                progress.set_postfix(loss=f"{loss.item():.3f}", radius=f"{state['radius']:.2f}",
                                     one_hot=f"{state['fixed']}/{2 * state['layers']}")
            if writer is not None and iteration % 50 == 0:
                writer.add_scalar("train/loss", loss.item(), iteration)
                for tag, value in {**ratio_scalars(model), **radius_scalars(state)}.items():
                    writer.add_scalar(tag, value, iteration)
        if work_dir is not None and iteration % iters_per_epoch == 0 and iteration < total_iters:
            save_atomically({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "lr_schedule": lr_schedule.state_dict(), "shuffle": shuffle.get_state(),
                             "torch_rng": torch.get_rng_state(), "iteration": iteration, "total_iters": total_iters,
                             "config": run_config(args)}, work_dir / "last.pth")
            if args.stop_after_epochs and (iteration - started_at) // iters_per_epoch >= args.stop_after_epochs:
                progress.close()
                print(f"stopped after {iteration} of {total_iters} iterations; continue with --resume")
                return
    progress.close()
    radius.step(total_iters)
    train_seconds = time.time() - start

    moving_average_acc = evaluate(model, test_loader)
    used = S.recompute_batch_statistics(model, (images for images, _ in stat_loader), args.stat_batches)
    batch_average_acc = evaluate(model, test_loader)

    trained = max(1, iteration - started_at)
    print(f"\ntrained {trained} iterations in {train_seconds:.0f} s "
          f"({1000 * train_seconds / trained:.0f} ms/iteration)")
    print(f"test top-1, moving-average statistics: {moving_average_acc:.2f} %")
    print(f"test top-1, batch-average statistics ({used} batches): {batch_average_acc:.2f} %")
    rows = S.describe_selection(model)
    if rows:
        print("\nnormalizer per layer:")
        print(S.format_selection(rows))
    if work_dir is not None:
        torch.save(model.state_dict(), work_dir / "final.pth")
        metrics = {"top1": round(batch_average_acc, 2), "top1_moving_average": round(moving_average_acc, 2),
                   "stat_batches": used, "ms_per_iteration": round(1000 * train_seconds / trained, 1)}
        if writer is not None:
            writer.add_scalar("val/top1", batch_average_acc, total_iters)
            writer.close()
        write_final_metrics(work_dir, metrics, total_iters)
        (work_dir / "last.pth").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
