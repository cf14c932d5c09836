"""Write Fashion-MNIST as an ImageFolder tree (``train/<class>/*.png``, ``val/<class>/*.png``).

The images come from Debian's ``dataset-fashion-mnist`` package (see
ssn_plugins.datasets.fashion_mnist); ``val`` is the official 10k test split. Used to run
tools/pretrain_imagenet.py on real data without ImageNet.

    python tools/make_fashion_mnist_imagefolder.py datasets/fashion_mnist_folder
    python tools/make_fashion_mnist_imagefolder.py tiny --train-per-class 20 --val-per-class 5
"""
from pathlib import Path

import torchvision
from tqdm import tqdm

from ssn_plugins.cli import tool_parser
from ssn_plugins.datasets.fashion_mnist import fashion_mnist_root


def write_split(dataset, out: Path, per_class=None) -> int:
    names = [c.replace("/", "-").replace(" ", "_") for c in dataset.classes]
    counts = [0] * len(names)
    for name in names:
        (out / name).mkdir(parents=True, exist_ok=True)
    written = 0
    for index in tqdm(range(len(dataset)), desc=out.name, unit="img"):
        label = int(dataset.targets[index])
        if per_class is not None and counts[label] >= per_class:
            continue
        image, _ = dataset[index]
        image.save(out / names[label] / f"{index:05d}.png")
        counts[label] += 1
        written += 1
        if per_class is not None and min(counts) >= per_class:
            break
    return written


def main(argv=None):
    parser = tool_parser(__doc__, "make_fashion_mnist_imagefolder")
    parser.add_argument("out", type=Path)
    parser.add_argument("--train-per-class", type=int, default=None, help="images per class (default: all)")
    parser.add_argument("--val-per-class", type=int, default=None)
    parser.add_argument("--data", "--cache", type=Path, default=None,
                        help="where the decompressed Fashion-MNIST files go (default $SSN_PLUGINS_CACHE/data)")
    args = parser.parse_args(argv)
    root = fashion_mnist_root(args.data)
    for split, train, per_class in (("train", True, args.train_per_class), ("val", False, args.val_per_class)):
        dataset = torchvision.datasets.FashionMNIST(root, train=train, download=False)
        n = write_split(dataset, args.out / split, per_class)
        print(f"{split}: {n} images in {args.out / split}")


if __name__ == "__main__":
    main()
