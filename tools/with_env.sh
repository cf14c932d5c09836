#!/usr/bin/env bash
# Installs (or reuses) the pinned ssn_plugins environment, then runs the given
# command inside it:
#
#   bash tools/with_env.sh python -m pytest
#   bash tools/with_env.sh python tools/train_fashion_mnist.py
#
# The virtual environment lives outside the clone, under
# $SSN_PLUGINS_CACHE (default ~/.cache/ssn_plugins), in a folder named after a
# hash of requirements/stack.txt and of this script, so a change to either builds
# a fresh one and an unchanged pair reuses it in seconds. Built wheels (mmcv) are
# cached beside it and survive a rebuilt venv.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SSN_PLUGINS_CACHE:-$HOME/.cache/ssn_plugins}
python=${SSN_PLUGINS_PYTHON:-python3.11}
key=$(cat "$repo/requirements/stack.txt" "$repo/tools/with_env.sh" | sha256sum | cut -c1-16)
venv="$cache/venv-$key"
wheels="$cache/wheels"

log() { printf '[with_env] %s\n' "$*" >&2; }

# detectron2 has no official PyPI release; sal-detectron2 0.7.2 is upstream main
# (April 2024) packed as a cp310 wheel of pure-Python modules whose compiled _C we
# do not need. Pinned by hash.
D2_WHEEL=sal_detectron2-0.7.2-cp310-none-any.whl
D2_SHA256=491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561
MMCV_VERSION=2.1.0

install_detectron2() {
  local tmp; tmp=$(mktemp -d)
  if [ ! -f "$wheels/$D2_WHEEL" ]; then
    "$venv/bin/pip" download -q --no-deps --only-binary=:all: --python-version 3.10 \
      -d "$tmp" sal-detectron2==0.7.2
    mv "$tmp/$D2_WHEEL" "$wheels/$D2_WHEEL"
  fi
  echo "$D2_SHA256  $wheels/$D2_WHEEL" | sha256sum -c --quiet -
  # pip refuses a cp310 tag on 3.11; the wheel holds no 3.10-specific binary we load.
  cp "$wheels/$D2_WHEEL" "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
  "$venv/bin/pip" install -q --no-deps "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
  # The wheel also ships a top-level `tools` package that would shadow ours.
  rm -rf "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tools"
  rm -rf "$tmp"
}

build_mmcv() {
  # mmcv 2.1.0 is source-only on PyPI and its setup.py hard-codes -std=c++17,
  # which torch 2.14's headers reject. Build it once with C++20 and cache the wheel.
  local built; built=$(ls "$wheels"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$built" ]; then
    local tmp; tmp=$(mktemp -d)
    log "building mmcv $MMCV_VERSION with ops (about 8 minutes, once per cache)"
    "$venv/bin/pip" download -q --no-deps --no-binary=:all: --no-build-isolation \
      -d "$tmp" mmcv==$MMCV_VERSION
    tar -xzf "$tmp"/mmcv-$MMCV_VERSION.tar.gz -C "$tmp"
    sed -i 's/-std=c++17/-std=c++20/g' "$tmp/mmcv-$MMCV_VERSION/setup.py"
    (cd "$tmp/mmcv-$MMCV_VERSION" &&
      MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} CFLAGS="-DNDEBUG -fwrapv -O2 -g0" \
        "$venv/bin/pip" wheel -q --no-build-isolation --no-deps -w "$wheels" .)
    rm -rf "$tmp"
    built=$(ls "$wheels"/mmcv-$MMCV_VERSION-*.whl | head -n1)
  fi
  "$venv/bin/pip" install -q --no-deps "$built"
}

patch_mmaction() {
  # mmaction2 1.2.0's wheel lacks mmaction/models/localizers/drn/, which
  # mmaction/models/localizers/__init__.py imports; provide that one name.
  local site; site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  local drn="$site/mmaction/models/localizers/drn"
  if [ ! -d "$drn" ]; then
    mkdir -p "$drn"
    cp "$repo/tools/env_patches/mmaction_drn.py" "$drn/drn.py"
    printf 'from .drn import DRN\n\n__all__ = ["DRN"]\n' > "$drn/__init__.py"
  fi
}

if [ ! -f "$venv/.complete" ]; then
  log "creating $venv (first run on this machine: about 15 minutes)"
  rm -rf "$venv"
  mkdir -p "$cache" "$wheels"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade "pip<26" wheel
  "$venv/bin/pip" install -q -r "$repo/requirements/stack.txt"
  install_detectron2
  build_mmcv
  patch_mmaction
  log "checking that every framework imports"
  "$venv/bin/python" - <<'PY'
import torch, torchvision, detectron2, mmengine, mmcv, mmcv.ops, mmseg, mmdet, mmaction
import detectron2.modeling, detectron2.evaluation  # noqa: F401
import mmseg.models, mmdet.models, mmaction.models  # noqa: F401  (these load mmcv.ops)
PY
  touch "$venv/.complete"
fi

# Debian packages the tools and tests use outside Python: Chromium renders the
# leaderboard's HTML page headless (tools/leaderboard.py --screenshot, its test).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's chromium (headless checks of the leaderboard's HTML page)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null; }
  else
    log "chromium is missing and cannot be installed here (needs root and apt-get): the HTML page checks will fail"
  fi
fi

# The venv may be shared by several clones: point the editable install at this one.
if [ "$(cd / && "$venv/bin/python" -c 'import os, ssn_plugins; print(os.path.dirname(os.path.dirname(os.path.realpath(ssn_plugins.__file__))))' 2>/dev/null)" != "$(realpath "$repo")" ]; then
  log "installing $repo in editable mode"
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$repo"
fi

[ $# -gt 0 ] || exit 0
cd "$repo"
PATH="$venv/bin:$PATH" exec "$@"
