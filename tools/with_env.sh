#!/usr/bin/env bash
# Installs (or reuses) the pinned ssn_plugins environment, then runs the given
# command inside it, from the clone's root:
#
#   bash tools/with_env.sh python -m pytest
#   bash tools/with_env.sh --with-browser python -m pytest   # and Debian's chromium first (root)
#   bash tools/with_env.sh --print-env                       # where the environment is (or would be built)
#   bash tools/with_env.sh python tools/train_fashion_mnist.py
#
# It is the standard install in a private venv: the two frameworks PyPI has no
# wheels of for this torch (detectron2, mmcv) by their recipes below, then
# `pip install -c requirements/stack.txt ".[all]"` (the package's extras,
# resolved against the pinned stack), as a user would into an existing
# environment (docs/installing.md).
#
# Prerequisites (README, Setup): Python 3.11 with its venv module and headers
# (SSN_PLUGINS_PYTHON names another interpreter), a C++20 compiler (mmcv's ops are
# built from source once), network access to PyPI; for some tests Debian's
# package archive, and root for the Debian packages (--with-browser: chromium).
#
# The virtual environment lives outside the clone, under $SSN_PLUGINS_CACHE
# (default ~/.cache/ssn_plugins), in a folder named after a hash of
# requirements/stack.txt, of pyproject.toml's dependencies, of the recipe below
# (comments left out) and of the interpreter's version, so a change to any of
# them builds a fresh one and an unchanged set reuses it in seconds. Clones share
# it: the command runs with this clone first on PYTHONPATH (the package itself is
# not left installed, so two clones never re-point each other). Downloaded and
# built wheels (detectron2, mmcv) are cached beside it, each moved into place only
# once complete and verified; mmcv's is keyed by the torch version, interpreter,
# compiler and build flags it was compiled with. A lock lets one first run build
# while a concurrent one waits for it.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SSN_PLUGINS_CACHE:-$HOME/.cache/ssn_plugins}
python=${SSN_PLUGINS_PYTHON:-python3.11}

with_browser=0 print_env=0
while [ $# -gt 0 ]; do
  case "$1" in
    --with-browser) with_browser=1 ;;
    --print-env) print_env=1 ;;   # print the environment's folder (built or not) and stop
    *) break ;;
  esac
  shift
done

log() { printf '[with_env] %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

if ! command -v "$python" >/dev/null 2>&1; then
  die "no '$python' on PATH: install Python 3.11 (Debian/Ubuntu: apt-get install python3.11 python3.11-venv" \
      "python3.11-dev) or set SSN_PLUGINS_PYTHON to a Python 3.11 interpreter"
fi
pyversion=$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
case "$pyversion" in
  3.11.*) ;;
  3.10.*|3.12.*) log "Python $pyversion: the stack is pinned and tested on 3.11; trying anyway" ;;
  *) die "$python is Python $pyversion; the pinned stack (torch 2.14, mmcv 2.1, detectron2 0.7) needs 3.11" \
         "(3.10 and 3.12 untested): set SSN_PLUGINS_PYTHON" ;;
esac
"$python" -c 'import venv, ensurepip' 2>/dev/null ||
  die "$python lacks the venv / ensurepip modules (Debian/Ubuntu: apt-get install python3.11-venv)"

# >>> recipe (hashed into the environment's key with stack.txt and the interpreter's version)
# detectron2 has no official PyPI release; sal-detectron2 0.7.2 is upstream main
# (April 2024) packed as a cp310 wheel of pure-Python modules whose compiled _C we
# do not need. Pinned by hash.
D2_WHEEL=sal_detectron2-0.7.2-cp310-none-any.whl
D2_SHA256=491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561
MMCV_VERSION=2.1.0
MIM_VERSION=0.3.9

fetch_detectron2_wheel() {
  # a cached wheel that fails its hash (a copy cut short by an older installer) is fetched again
  if [ -f "$wheels/$D2_WHEEL" ] && ! echo "$D2_SHA256  $wheels/$D2_WHEEL" | sha256sum -c --quiet - 2>/dev/null; then
    log "the cached $D2_WHEEL fails its SHA-256: fetching it again"
    rm -f "$wheels/$D2_WHEEL"
  fi
  if [ ! -f "$wheels/$D2_WHEEL" ]; then
    "$venv/bin/pip" download -q --no-deps --only-binary=:all: --python-version 3.10 \
      -d "$scratch/d2" sal-detectron2==0.7.2
    echo "$D2_SHA256  $scratch/d2/$D2_WHEEL" | sha256sum -c --quiet - ||
      die "the downloaded $D2_WHEEL does not match its pinned SHA-256"
    mv "$scratch/d2/$D2_WHEEL" "$wheels/$D2_WHEEL"  # same file system: an atomic rename
  fi
}

install_detectron2() {
  fetch_detectron2_wheel
  # pip refuses a cp310 tag on 3.11; the wheel holds no 3.10-specific binary we load.
  cp "$wheels/$D2_WHEEL" "$scratch/sal_detectron2-0.7.2-py3-none-any.whl"
  "$venv/bin/pip" install -q --no-deps "$scratch/sal_detectron2-0.7.2-py3-none-any.whl"
  # The wheel also ships detectron2's top-level `tools` package, which would shadow ours: its scripts
  # (tools/lazyconfig_train_net.py, train_net.py, ...) move to $venv/share/detectron2/tools, where the tests run
  # detectron2's own training loops from.
  local site; site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  mkdir -p "$venv/share/detectron2"
  rm -rf "$venv/share/detectron2/tools"
  mv "$site/tools" "$venv/share/detectron2/tools"
}

MMCV_CXXSTD=c++20
MMCV_CFLAGS="-DNDEBUG -fwrapv -O2 -g0"

build_mmcv() {
  # mmcv 2.1.0 is source-only on PyPI and its setup.py hard-codes -std=c++17,
  # which torch 2.14's headers reject. Build it once with C++20 and cache the wheel
  # in a folder named after what it was compiled against (torch's headers, the
  # interpreter, the compiler, the flags): a torch bump builds a fresh one.
  command -v "${CXX:-g++}" >/dev/null 2>&1 || die "no C++ compiler (${CXX:-g++}) to build mmcv's ops: apt-get install g++"
  local torch_version; torch_version=$("$venv/bin/python" -c 'import torch; print(torch.__version__)')
  local build; build=$(printf '%s\n' "mmcv $MMCV_VERSION" "torch $torch_version" "python $pyversion" \
    "cxx $("${CXX:-g++}" -dumpfullversion 2>/dev/null || "${CXX:-g++}" -dumpversion)" "std $MMCV_CXXSTD" \
    "cflags $MMCV_CFLAGS" "ops 1" | sha256sum | cut -c1-12)
  local folder="$wheels/mmcv-$MMCV_VERSION-torch$torch_version-$build"
  local built; built=$(ls "$folder"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n1 || true)
  if [ -n "$built" ] && ! "$venv/bin/python" -m zipfile -t "$built" >/dev/null 2>&1; then
    log "the cached $(basename "$built") is not a complete wheel: building it again"
    rm -f "$built"
    built=
  fi
  if [ -z "$built" ]; then
    log "building mmcv $MMCV_VERSION with ops against torch $torch_version (about 8 minutes, once per cache)"
    "$venv/bin/pip" download -q --no-deps --no-binary=:all: --no-build-isolation \
      -d "$scratch/mmcv" mmcv==$MMCV_VERSION
    tar -xzf "$scratch"/mmcv/mmcv-$MMCV_VERSION.tar.gz -C "$scratch/mmcv"
    sed -i "s/-std=c++17/-std=$MMCV_CXXSTD/g" "$scratch/mmcv/mmcv-$MMCV_VERSION/setup.py"
    (cd "$scratch/mmcv/mmcv-$MMCV_VERSION" &&
      MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} CFLAGS="$MMCV_CFLAGS" \
        "$venv/bin/pip" wheel -q --no-build-isolation --no-deps -w "$scratch/mmcv/dist" .)
    local wheel; wheel=$(ls "$scratch"/mmcv/dist/mmcv-$MMCV_VERSION-*.whl | head -n1)
    "$venv/bin/python" -m zipfile -t "$wheel" >/dev/null || die "the mmcv build gave a broken wheel: $wheel"
    mkdir -p "$folder"
    built="$folder/$(basename "$wheel")"
    mv "$wheel" "$built"
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

build_venv() {
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade "pip<26" wheel
  # torch first: mmcv's build compiles against its headers
  "$venv/bin/pip" install -q -c "$repo/requirements/stack.txt" torch torchvision setuptools "numpy<2"
  install_detectron2
  build_mmcv
  # the standard install: the package's extras, pinned by the stack, plus the tools of the tests; built from a
  # copy of the sources, so the clone gets no build/ or egg-info (which would pass for an installed copy)
  mkdir "$scratch/source"
  cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/LICENSE" "$repo/ssn_plugins" "$scratch/source/"
  "$venv/bin/pip" install -q -c "$repo/requirements/stack.txt" "$scratch/source[all]" -r "$repo/requirements/stack.txt"
  "$venv/bin/pip" uninstall -q -y ssn-plugins  # the clone runs from PYTHONPATH (see the top)
  patch_mmaction
  # openmim without its dataset-download dependency (see requirements/stack.txt)
  "$venv/bin/pip" install -q --no-deps openmim==$MIM_VERSION
  log "checking that every framework imports"
  "$venv/bin/python" - <<'PY'
import torch, torchvision, detectron2, mmengine, mmcv, mmcv.ops, mmseg, mmdet, mmaction
import detectron2.modeling, detectron2.evaluation  # noqa: F401
import mmseg.models, mmdet.models, mmaction.models  # noqa: F401  (these load mmcv.ops)
import timm, mim.commands.train  # noqa: F401
PY
}
# <<< recipe

# what the environment is built from, comments and blank lines left out (a reworded comment reuses it)
uncommented() { sed -e 's/^[[:space:]]*#.*$//' -e 's/[[:space:]]\{1,\}#[[:space:]].*$//' -e 's/[[:space:]]*$//' \
                      -e '/^$/d'; }
key=$( { uncommented < "$repo/requirements/stack.txt"
         sed -n '/^# >>> recipe/,/^# <<< recipe/p' "$repo/tools/with_env.sh" | uncommented
         sed -n '/^dependencies = /p; /^\[project.optional-dependencies\]/,/^\[tool/p' "$repo/pyproject.toml" |
           uncommented
         echo "python $pyversion"; } | sha256sum | cut -c1-16)
venv="$cache/venv-$key"
wheels="$cache/wheels"
if [ "$print_env" = 1 ]; then
  echo "$venv"
  exit 0
fi
mkdir -p "$cache" "$wheels"

if [ ! -f "$venv/.complete" ]; then
  exec 9>"$venv.lock"
  if ! flock -n 9; then
    log "another run is building $venv; waiting for it"
    flock 9
  fi
  if [ ! -f "$venv/.complete" ]; then  # (the run we waited for may have finished it)
    log "creating $venv with Python $pyversion (first run on this machine: about 15 minutes)"
    scratch=$(mktemp -d "$cache/.scratch.XXXXXX")  # beside the wheel cache: moves from it are atomic renames
    trap 'rm -rf "$scratch"' EXIT
    rm -rf "$venv"
    build_venv
    touch "$venv/.complete"
    rm -rf "$scratch"
    trap - EXIT
  fi
  flock -u 9
  exec 9>&-
fi

# --with-browser: Debian's chromium, which renders the leaderboard's HTML page headless
# (tools/leaderboard.py --screenshot and its test); asked for, so it fails loudly when it cannot.
if [ "$with_browser" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 ||
    die "--with-browser: chromium is missing and cannot be installed here (needs root and apt-get):" \
        "install Debian's chromium yourself, or drop --with-browser (the page's browser test then skips, saying why)"
  log "installing Debian's chromium (--with-browser)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null; } ||
    die "--with-browser: apt-get could not install chromium"
fi

[ $# -gt 0 ] || exit 0
cd "$repo"
PATH="$venv/bin:$PATH" PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" exec "$@"
