"""Build the real action-clip set (Kinetics-style layouts) from the labelled HMDB51 / UCF101 clips in
Debian's pytorch-vision source package (downloaded with apt-get on first use, checked by SHA-256).

    python tools/build_real_clips.py datasets/real_clips
    python tools/build_real_clips.py datasets/real_clips --layouts videos rawframes

See ``ssn_plugins/datasets/real_clips.py`` for the sources, the classes, the windows and the split.
"""
import argparse
from pathlib import Path

from ssn_plugins.datasets.real_clips import CLASSES, LAYOUTS, write_kinetics_style


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, nargs="?", default=Path("datasets/real_clips"))
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=["videos"])
    parser.add_argument("--length", type=int, default=16, help="frames per window")
    parser.add_argument("--short-side", type=int, default=128, help="pixels on the shorter side")
    args = parser.parse_args(argv)
    counts = write_kinetics_style(args.root, args.layouts, length=args.length, short_side=args.short_side)
    for split, count in counts.items():
        for layout in args.layouts:
            print(f"{split}: {count} windows of {args.length} frames -> {args.root / f'{layout}_{split}'}, "
                  f"list {args.root / f'real_clips_{split}_list_{layout}.txt'}")
    print("classes:", ", ".join(f"{i}={name}" for i, name in enumerate(CLASSES)))


if __name__ == "__main__":
    main()
