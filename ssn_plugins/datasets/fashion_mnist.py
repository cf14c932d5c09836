"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package, for torchvision's ``FashionMNIST``
(tools/train_fashion_mnist.py and tools/make_fashion_mnist_imagefolder.py)."""
import gzip
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from ..cache import data_cache

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def fashion_mnist_root(cache: Optional[Path] = None) -> Path:
    """A torchvision ``FashionMNIST`` root holding the Debian package's files, decompressed.

    ``cache`` defaults to ``$SSN_PLUGINS_CACHE/data``. Installs the package
    with apt-get when it is missing and this runs as root.
    """
    cache = data_cache() if cache is None else Path(cache)
    if not all((DEBIAN_DIR / f"{name}.gz").exists() for name in FILES):
        if os.geteuid() != 0:
            raise SystemExit(f"Fashion-MNIST is not installed: run `sudo apt-get install {DEBIAN_PACKAGE}`")
        print(f"installing Debian package {DEBIAN_PACKAGE} ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", DEBIAN_PACKAGE],
                       check=True, stdout=subprocess.DEVNULL)
    raw = cache / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if not (raw / name).exists():
            with gzip.open(DEBIAN_DIR / f"{name}.gz", "rb") as src, open(raw / f"{name}.part", "wb") as dst:
                shutil.copyfileobj(src, dst)
            (raw / f"{name}.part").rename(raw / name)
    return cache
