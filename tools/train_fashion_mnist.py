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
"""
import argparse
import time
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import ssn_plugins as S
from fashion_mnist import DEFAULT_CACHE, fashion_mnist_root

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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--norm", choices=sorted(NORMS), default="SSN")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the 60k training images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--stat-batches", type=int, default=50, help="batches for batch-average statistics")
    parser.add_argument("--data", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    root = fashion_mnist_root(args.data)
    to_tensor = torchvision.transforms.Compose([
        torchvision.transforms.ToTensor(), torchvision.transforms.Normalize((0.286,), (0.353,))])
    train_set = torchvision.datasets.FashionMNIST(root, train=True, transform=to_tensor, download=False)
    test_set = torchvision.datasets.FashionMNIST(root, train=False, transform=to_tensor, download=False)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True)
    test_loader = DataLoader(test_set, batch_size=500)

    model = small_resnet(NORMS[args.norm])
    optimizer = torch.optim.SGD(
        S.param_groups(model, lr=args.lr, weight_decay=args.weight_decay, norm_weight_decay=0.0),
        lr=args.lr, momentum=0.9, nesterov=True)
    total_iters = int(args.epochs * len(train_loader))
    lr_schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_iters, pct_start=0.15)
    radius = S.RadiusScheduler(model, total_iters=total_iters)
    print(f"{args.norm} small ResNet, {sum(p.numel() for p in model.parameters())} parameters, "
          f"{total_iters} iterations of batch {args.batch_size}")

    start = time.time()
    iteration = 0
    progress = tqdm(total=total_iters, unit="it", dynamic_ncols=True)
    model.train()
    while iteration < total_iters:
        for images, labels in train_loader:
            if iteration == total_iters:
                break
            state = radius.step(iteration)
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            S.clip_ratio_grad_norm(model, max_norm=1.0)
            optimizer.step()
            lr_schedule.step()
            iteration += 1
            progress.update()
            if iteration % 20 == 0:
                progress.set_postfix(loss=f"{loss.item():.3f}", radius=f"{state['radius']:.2f}",
                                     one_hot=f"{state['fixed']}/{2 * state['layers']}")
    progress.close()
    radius.step(total_iters)
    train_seconds = time.time() - start

    moving_average_acc = evaluate(model, test_loader)
    used = S.recompute_batch_statistics(model, (images for images, _ in train_loader), args.stat_batches)
    batch_average_acc = evaluate(model, test_loader)

    print(f"\ntrained {total_iters} iterations in {train_seconds:.0f} s "
          f"({1000 * train_seconds / total_iters:.0f} ms/iteration)")
    print(f"test top-1, moving-average statistics: {moving_average_acc:.2f} %")
    print(f"test top-1, batch-average statistics ({used} batches): {batch_average_acc:.2f} %")
    if args.norm in ("SN", "SSN"):
        print("\nnormalizer per layer:")
        print(S.format_selection(S.describe_selection(model)))


if __name__ == "__main__":
    main()
