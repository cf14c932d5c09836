"""The published SN / SSN / CE ImageNet checkpoints and the releases' trained downstream models by name: ``ssn://NAME``.

The catalogue (``model_zoo.json``, data) lists every published checkpoint
with its download links, checksum and published figures. :func:`local_path`
turns ``ssn://NAME`` (or ``ssn://LAYOUT/NAME``) into a local file in a
framework's layout: on first use it downloads the release's file into the
cache (a progress bar; a partial file ``*.part`` that the next attempt
resumes), checks the release's checksum, converts it with
:func:`ssn_plugins.checkpoints.to_layout` (the code of
``tools/convert_checkpoint.py``, I3D inflation included) and caches the
result; later uses read the cache and need no network. Downloads are only
ever read with ``torch.load(weights_only=True)``: no code from a download runs.

Settings (environment variables):

- ``SSN_PLUGINS_CACHE``: the cache root (default ``~/.cache/ssn_plugins``);
  files go to ``checkpoints/downloads/NAME.pth`` and ``checkpoints/converted/``.
- ``SSN_PLUGINS_WEIGHTS``: those two folders' parent instead of
  ``$SSN_PLUGINS_CACHE/checkpoints`` (a weights cache shared by a group; files
  are written with the process's umask, and downloads are locked with ``flock``).
- ``SSN_PLUGINS_MIRROR``: a base URL that replaces every catalogue link
  (``$SSN_PLUGINS_MIRROR/NAME.pth``), for a mirror inside a cluster, or the
  local server of the tests.

To place a file by hand (no network, or a link that needs a browser), save the
release's file as ``checkpoints/downloads/NAME.pth`` under the cache root: it
is checked and converted like a download. :func:`place_file`
(``tools/place_checkpoint.py``) does it for you, and with ``skip_checksum``
(``--skip-checksum``) places a file that is not the release's byte for byte (a
re-save, a mirror's copy): it is used unchecked, and every use says so.

A trained detector of the SN detection release (``task: detection``, a
Detectron.pytorch file) exists in the ``detectron2`` layout only, converted by
:func:`ssn_plugins.detectron_pytorch.to_detectron2`; its entry names the shipped
config that rebuilds it (``config``), the release's figures (``results``) and
test settings (``test``). The segmentation release's trained ADE20K model
(``task: semantic segmentation``) is two files (``parts``: encoder, decoder),
converted together by :func:`ssn_plugins.csail_segmentation.to_openmmlab` into
the ``openmmlab`` layout (an mmseg ``EncoderDecoder``). A download prints the
release's licence (``licence``).

Layouts (:data:`LAYOUTS`): ``torch`` (:class:`ssn_plugins.models.ResNet`),
``detectron2``, ``openmmlab`` (mmdet / mmseg ``ResNet``) and ``i3d``
(mmaction2 ``ResNet3d``). The adapters pick their own default: detectron2's
``ssn://`` handler ``detectron2``, mmengine's ``openmmlab``.
"""
import difflib
import hashlib
import http.client
import json
import os
import shutil
import socket
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Tuple

from . import cache, checkpoints, csail_segmentation, detectron_pytorch

__all__ = ["SCHEME", "LAYOUTS", "INPUT_CONVENTIONS", "CatalogueEntry", "ModelZooError", "catalogue", "get_entry",
           "parse_url", "local_path", "download", "download_parts", "place_file"]

SCHEME = "ssn://"
LAYOUTS = tuple(checkpoints.TARGETS)
CATALOGUE = Path(__file__).with_name("model_zoo.json")
CHUNK = 1 << 20
#: seconds without data before a download attempt gives up (its partial file is kept for the next one)
TIMEOUT = 60


#: the input conventions of the catalogue's files (``input``): channel order, and the per-channel mean and
#: standard deviation of 0-255 pixels (in that channel order) the networks were trained to expect
INPUT_CONVENTIONS = {
    "rgb-imagenet": {"format": "RGB", "mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375)},
    "bgr-caffe": {"format": "BGR", "mean": (103.53, 116.28, 123.675), "std": (1.0, 1.0, 1.0)},
    # the CSAIL segmentation framework's (and Detectron's) BGR means, which the SN segmentation release trained with
    "bgr-detectron-caffe": {"format": "BGR", "mean": (102.9801, 115.9465, 122.7717), "std": (1.0, 1.0, 1.0)},
}


class ModelZooError(RuntimeError):
    """A catalogue name that could not be turned into a local file, with what to do about it."""


@dataclass(frozen=True)
class CatalogueEntry:
    """One published checkpoint (a record of ``model_zoo.json``)."""
    name: str
    release: str
    page: str
    urls: Tuple[str, ...]
    by_hand: Tuple[str, ...]
    architecture: dict = field(hash=False)
    input: str = "rgb-imagenet"
    md5: Optional[str] = None
    sha256_prefix: Optional[str] = None
    batch: Optional[str] = None
    top1: Optional[float] = None
    top5: Optional[float] = None
    note: str = ""
    #: ``classification`` (an ImageNet backbone), ``detection`` or ``semantic segmentation`` (a trained model)
    task: str = "classification"
    #: a trained model's published figures by metric (``{"box AP": 39.1}``)
    results: dict = field(default_factory=dict, hash=False)
    #: the release's own test settings of a trained model (sizes, NMS, RoIAlign variant, ...)
    test: dict = field(default_factory=dict, hash=False)
    #: the shipped config that rebuilds a trained model's architecture with the release's test settings
    config: str = ""
    #: the licence as the release states it ("" where it states none)
    licence: str = ""
    #: a model published as several files (the segmentation release's encoder and decoder): part -> its
    #: ``urls`` and ``by_hand`` links; ``urls`` / ``by_hand`` above are then empty / all the parts' links
    parts: dict = field(default_factory=dict, hash=False)

    @property
    def batch_setting(self) -> Optional[Tuple[int, int]]:
        """``batch`` as ``(GPUs, images per GPU)``: ``"(8,2)"`` -> ``(8, 2)``; ``None`` where the release gives none."""
        if not self.batch:
            return None
        gpus, _, per_gpu = self.batch.strip("()").partition(",")
        return int(gpus), int(per_gpu)

    @property
    def input_convention(self) -> dict:
        """``{"format", "mean", "std"}`` of :data:`INPUT_CONVENTIONS` this network expects."""
        return INPUT_CONVENTIONS[self.input]

    @property
    def openmmlab_layout(self) -> bool:
        """A file already in OpenMMLab's 2-D names (not an SN/SSN/CE release file)."""
        return self.architecture.get("layout") == "openmmlab"

    @property
    def trained_segmenter(self) -> bool:
        """A trained encoder + decoder of the SN segmentation release (layout ``openmmlab`` only)."""
        return self.architecture.get("layout") == csail_segmentation.LAYOUT

    @property
    def trained_detector(self) -> bool:
        """A trained Detectron.pytorch detector of the SN detection release (layout ``detectron2`` only)."""
        return self.architecture.get("layout") == detectron_pytorch.LAYOUT


@lru_cache(maxsize=None)
def catalogue() -> Dict[str, CatalogueEntry]:
    """Every published checkpoint by name."""
    records = json.loads(CATALOGUE.read_text())["models"]
    return {r["name"]: CatalogueEntry(**{**r, "urls": tuple(r["urls"]), "by_hand": tuple(r["by_hand"])})
            for r in records}


def get_entry(name: str) -> CatalogueEntry:
    """The catalogue entry ``name``; an unknown name lists the close ones."""
    entries = catalogue()
    if name not in entries:
        close = difflib.get_close_matches(name, entries, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelZooError(f"{SCHEME}{name}: no such model in the catalogue{hint}; known: {', '.join(entries)}")
    return entries[name]


def _split_url(url: str) -> Tuple[str, str]:
    """``ssn://[LAYOUT/]NAME`` -> ``(LAYOUT or "", NAME)``, unchecked."""
    layout, _, name = url[len(SCHEME):].strip("/").rpartition("/")
    return layout, name


def find_entry(weights) -> Optional[CatalogueEntry]:
    """The catalogue entry that ``ssn://[LAYOUT/]NAME`` names; ``None`` for other weights (a path, a URL) and for
    names the catalogue does not hold."""
    if not isinstance(weights, str) or not weights.startswith(SCHEME):
        return None
    return catalogue().get(_split_url(weights)[1])


def parse_url(url: str, default_layout: str) -> Tuple[str, str]:
    """``ssn://NAME`` -> ``(NAME, default_layout)``; ``ssn://LAYOUT/NAME`` -> ``(NAME, LAYOUT)``."""
    if not url.startswith(SCHEME):
        raise ModelZooError(f"{url!r} is not an {SCHEME} name")
    layout, name = _split_url(url)
    layout = layout or default_layout
    if layout not in LAYOUTS:
        raise ModelZooError(f"{url}: unknown layout {layout!r}; write {SCHEME}NAME or {SCHEME}LAYOUT/NAME with LAYOUT "
                            f"one of {', '.join(LAYOUTS)}")
    get_entry(name)
    return name, layout


@dataclass(frozen=True)
class _ReleaseFile:
    """One file of a catalogue entry: where it is cached, where it is downloaded from, where to get it by hand."""
    label: str
    target: Path
    urls: Tuple[str, ...]
    by_hand: Tuple[str, ...]


def _release_files(entry: CatalogueEntry) -> Dict[str, _ReleaseFile]:
    """The entry's files by part (``""`` for a one-file model): ``downloads/NAME.pth`` or ``NAME.PART.pth``;
    ``$SSN_PLUGINS_MIRROR`` serves them under the same names."""
    mirror = os.environ.get("SSN_PLUGINS_MIRROR")
    specs = entry.parts or {"": {"urls": entry.urls, "by_hand": entry.by_hand}}
    files = {}
    for part, spec in specs.items():
        stem = f"{entry.name}.{part}" if part else entry.name
        urls = (f"{mirror.rstrip('/')}/{stem}.pth",) if mirror else tuple(spec["urls"])
        files[part] = _ReleaseFile(f"{SCHEME}{entry.name}" + (f" ({part})" if part else ""),
                                   cache.weights_root() / "downloads" / f"{stem}.pth", urls, tuple(spec["by_hand"]))
    return files


def _by_hand_advice(entry: CatalogueEntry, file: _ReleaseFile) -> str:
    return (f"to place it by hand, download it from {' or '.join(file.by_hand)} (listed on {entry.page}) and save it "
            f"as {file.target}")


@contextmanager
def _locked(path: Path):
    """An exclusive lock beside ``path``: ranks of one job starting together download and convert once."""
    locks = cache.weights_root() / "locks"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        locks.mkdir(parents=True, exist_ok=True)
        handle = open(locks / f"{path.parent.name}-{path.stem}.lock", "w")
    except OSError as e:
        raise ModelZooError(f"the model zoo's cache {cache.weights_root()} cannot be written ({e.strerror or e}: "
                            f"{e.filename or path}), and {path.name} is not in it yet: set SSN_PLUGINS_WEIGHTS (or "
                            f"SSN_PLUGINS_CACHE) to a writable folder, or have the cache's owner fetch it") from None
    with handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, each process downloads on its own
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _progress(total: Optional[int], initial: int, label: Optional[str]):
    if label is None:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # the core needs torch only; without tqdm the download is silent until it ends
        return None
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                file=sys.stderr, disable=None)


class _AttemptFailed(Exception):
    """One URL did not give the file (the message says why)."""


def _fetch(url: str, part: Path, label: Optional[str]) -> None:
    """Download ``url`` into ``part``, continuing a partial file with an HTTP range request.

    ``label``: the progress bar's title (``None``: no bar)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "ssn_plugins", **({"Range": f"bytes={have}-"}
                                                                                   if have else {})})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the partial file is already whole
            return
        raise _AttemptFailed(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise _AttemptFailed(f"{url}: cannot connect ({reason}); no network?") from None
    with response:
        if "text/html" in response.headers.get("Content-Type", ""):
            raise _AttemptFailed(f"{url}: the server sent an HTML page, not a checkpoint (a sign-in, quota or "
                                 f"confirmation page)")
        resumed = response.status == 206
        if not resumed:
            have = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None else None
        bar = _progress(expected, have, label)
        received = have
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        except (http.client.HTTPException, OSError, socket.timeout) as e:
            raise _AttemptFailed(f"{url}: interrupted after {received} bytes ({type(e).__name__}: {e}); the partial "
                                 f"file {part} is kept and the next attempt resumes it") from None
        finally:
            if bar is not None:
                bar.close()
    if expected is not None and received < expected:
        raise _AttemptFailed(f"{url}: the connection closed after {received} of {expected} bytes; the partial file "
                             f"{part} is kept and the next attempt resumes it")


def _checksum_problem(entry: CatalogueEntry, path: Path) -> Optional[str]:
    """Why ``path`` is not the published file (an HTML page, a wrong checksum), or ``None``."""
    with open(path, "rb") as f:
        head = f.read(64).lstrip().lower()
    if head.startswith((b"<!doctype", b"<html")):
        return "it is an HTML page, not a checkpoint"
    if entry.md5 is None and entry.sha256_prefix is None:
        return None
    md5, sha256 = _digests(path)
    if entry.md5 is not None and md5 != entry.md5:
        return f"its MD5 is {md5}, the release lists {entry.md5}"
    if entry.sha256_prefix is not None and not sha256.startswith(entry.sha256_prefix):
        return f"its SHA-256 starts {sha256[:len(entry.sha256_prefix)]}, expected {entry.sha256_prefix}"
    return None


def _digests(path: Path) -> Tuple[str, str]:
    """``(MD5, SHA-256)`` of ``path`` as hex, read once in chunks."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            md5.update(block)
            sha256.update(block)
    return md5.hexdigest(), sha256.hexdigest()


def _set_aside(path: Path) -> Path:
    """Move a file that is not the published one to ``NAME.pth.rejected`` (it may be the user's only copy)."""
    rejected = path.with_name(path.name + ".rejected")
    os.replace(path, rejected)
    return rejected


def download(name: str, progress: bool = True) -> Path:
    """The release's file for ``name`` in the cache, downloaded and checked on first use.

    A file under the final name is complete and checked (or placed by hand,
    then checked here); a download in progress lives in ``NAME.pth.part``.
    A checksum mismatch deletes a download, moves a file placed by hand to
    ``NAME.pth.rejected``, and raises. A model of several files: :func:`download_parts`.
    """
    entry = get_entry(name)
    if entry.parts:
        raise ModelZooError(f"{SCHEME}{name} is published as {len(entry.parts)} files ({', '.join(entry.parts)}): "
                            f"use download_parts")
    return download_parts(name, progress)[""]


def download_parts(name: str, progress: bool = True) -> Dict[str, Path]:
    """Every file of ``name`` (part -> path; ``""`` for a one-file model), each as :func:`download` describes."""
    entry = get_entry(name)
    files = _release_files(entry)
    if progress and entry.licence and not all(f.target.exists() for f in files.values()):
        print(f"[ssn_plugins] {SCHEME}{name}: the {entry.release} release's licence: {entry.licence}", file=sys.stderr)
    return {part: _download_file(entry, file, progress) for part, file in files.items()}


def _download_file(entry: CatalogueEntry, file: _ReleaseFile, progress: bool) -> Path:
    target = file.target
    if target.exists() and not _unchecked_marker(target).exists() and _checksum_problem(entry, target) is None:
        return target  # complete and checked: no lock needed (a read-only shared cache works)
    with _locked(target):
        unchecked = _unchecked_marker(target)
        if target.exists() and unchecked.exists():
            if progress:
                print(f"[ssn_plugins] {file.label}: {target} is used unchecked ({unchecked.read_text().strip()})",
                      file=sys.stderr)
            return target
        if target.exists():
            problem = _checksum_problem(entry, target)
            if problem is not None:  # a file placed by hand: kept aside, never under the name that is trusted
                rejected = _set_aside(target)
                raise ModelZooError(f"{target} (for {file.label}) is not the published file: {problem}; it was "
                                    f"moved to {rejected}. Download it again, or {_by_hand_advice(entry, file)}; "
                                    f"to use this file anyway: {_skip_advice(entry, file, rejected)}")
            return target
        part = target.with_name(target.name + ".part")
        failures = []
        for url in file.urls:
            if progress:
                print(f"[ssn_plugins] downloading {file.label} from {url}", file=sys.stderr)
            try:
                _fetch(url, part, entry.name if progress else None)
            except _AttemptFailed as e:
                failures.append(str(e))
                continue
            problem = _checksum_problem(entry, part)
            if problem is not None:
                part.unlink()
                failures.append(f"{url}: the downloaded file is not the published one: {problem}; it was deleted")
                continue
            os.replace(part, target)
            return target
        raise ModelZooError(f"cannot download {file.label}:\n  " + "\n  ".join(failures)
                            + f"\n{_by_hand_advice(entry, file)}")


def _unchecked_marker(target: Path) -> Path:
    return target.with_name(target.name + ".unchecked")


def _skip_advice(entry: CatalogueEntry, file: _ReleaseFile, source) -> str:
    part = next((p for p, f in _release_files(entry).items() if f.target == file.target and p), "")
    return (f"python tools/place_checkpoint.py {entry.name} {source}" + (f" --part {part}" if part else "")
            + " --skip-checksum")


def place_file(name: str, source, part: str = "", skip_checksum: bool = False) -> Path:
    """Copy ``source`` into the cache as the release's file of ``name`` (its ``part``: ``encoder``, ... for a model
    of several files), for a file fetched by hand. It is checked as a download is, unless ``skip_checksum``: then
    it is used as it is (a re-save or another copy of the release, which cannot match its checksum), and every use
    prints that. Files converted from an earlier copy are removed. Returns the cached file."""
    entry = get_entry(name)
    files = _release_files(entry)
    if part not in files:
        known = ", ".join(p for p in files if p) or "none: the model is one file"
        raise ModelZooError(f"{SCHEME}{name}: no part {part!r} (parts: {known})")
    file, source = files[part], Path(source)
    if not source.is_file():
        raise ModelZooError(f"{source}: no such file")
    with _locked(file.target):
        problem = None if skip_checksum else _checksum_problem(entry, source)
        if problem is not None:
            raise ModelZooError(f"{source} is not the published file for {file.label}: {problem}; to use it anyway: "
                                f"{_skip_advice(entry, file, source)}")
        tmp = file.target.with_name(file.target.name + ".placing")
        shutil.copyfile(source, tmp)
        os.replace(tmp, file.target)
        marker = _unchecked_marker(file.target)
        if skip_checksum:
            md5 = _digests(file.target)[0]
            marker.write_text(f"placed from {source} with --skip-checksum; MD5 {md5}"
                              + (f", the release lists {entry.md5}" if entry.md5 else "") + "\n")
        elif marker.exists():
            marker.unlink()
    for suffix in checkpoints.TARGETS.values():  # conversions of an earlier copy
        stale = cache.weights_root() / "converted" / f"{name}{suffix}"
        if stale.exists():
            stale.unlink()
    return file.target


def _convert(entry: CatalogueEntry, sources: Dict[str, Path], layout: str) -> dict:
    """The release's files ``sources`` (part -> path) in ``layout`` (an object to save)."""
    if entry.trained_segmenter:
        return csail_segmentation.to_openmmlab(checkpoints.load_checkpoint_file(sources["encoder"]),
                                               checkpoints.load_checkpoint_file(sources["decoder"]),
                                               entry.architecture)[0]
    source = sources[""]
    if entry.trained_detector:
        return detectron_pytorch.to_detectron2(checkpoints.load_checkpoint_file(source), entry.architecture)[0]
    if entry.openmmlab_layout:  # a 2-D OpenMMLab file: the I3D inflation of tools/convert_checkpoint.py
        loaded = checkpoints.load_checkpoint_file(source)
        if not isinstance(loaded, dict):
            raise checkpoints.ConversionError(f"{source}: not a state dict")
        state_dict = loaded.get("state_dict", loaded)
        norm = entry.architecture["norm"].lower()
        return checkpoints.inflate_openmmlab_resnet(state_dict, entry.architecture["depth"], norm)[0]
    model = checkpoints.read_published(source)
    _check_architecture(entry, model, source)
    return checkpoints.to_layout(model, layout)[0]


def _check_architecture(entry: CatalogueEntry, model: "checkpoints.PublishedModel", source: Path) -> None:
    """The file's network (as read_published inferred it) is the one the catalogue names: most releases list no
    checksum, so a file under the wrong name (a ResNet-18, the [IN, LN] 8x1 model as 8x32) would load silently."""
    a = entry.architecture
    expected = {"depth": a["depth"], "version": a.get("version", 1), "norm": a["norm"],
                "candidates": tuple(a.get("candidates") or ()), "CE": bool(a.get("ce", False))}
    found = {"depth": model.depth, "version": model.version, "norm": model.norm, "candidates": tuple(model.candidates),
             "CE": model.ce}
    wrong = [f"{key} {found[key]} (the catalogue's {value})" for key, value in expected.items() if found[key] != value]
    if wrong:
        raise checkpoints.ConversionError(f"{source} is not {SCHEME}{entry.name}'s network: {', '.join(wrong)}")


def _check_layout(entry: CatalogueEntry, layout: str) -> None:
    """Refuse, before any download, a layout the model has no counterpart in."""
    if entry.openmmlab_layout and layout not in ("openmmlab", "i3d"):
        raise ModelZooError(f"{SCHEME}{layout}/{entry.name}: an OpenMMLab ResNet; only the 'openmmlab' and 'i3d' "
                            f"layouts exist")
    if entry.trained_segmenter and layout != "openmmlab":
        raise ModelZooError(f"{SCHEME}{layout}/{entry.name}: a trained segmentation model; only the 'openmmlab' "
                            f"layout (an mmseg EncoderDecoder) exists (use it with {entry.config})")
    if entry.trained_detector and layout != "detectron2":
        raise ModelZooError(f"{SCHEME}{layout}/{entry.name}: a trained Detectron.pytorch detector; only the "
                            f"'detectron2' layout exists (use it with {entry.config})")
    if entry.architecture.get("version", 1) != 1 and layout != "torch":
        raise ModelZooError(f"{SCHEME}{layout}/{entry.name}: the v2 (pre-activation) ResNet has no {layout} "
                            f"counterpart; use it as ssn://torch/{entry.name} (ssn_plugins.models.ResNet)")


def _digest_file(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _record_digest(target: Path) -> None:
    """Note the converted file's size and SHA-256 beside it, so that damage later is seen and repaired."""
    note = _digest_file(target)
    tmp = note.with_name(note.name + ".tmp")
    tmp.write_text(f"{_digests(target)[1]} {target.stat().st_size}\n")
    os.replace(tmp, note)


def _intact(target: Path) -> bool:
    """Whether a converted file still is what was written (files converted before digests were kept: yes)."""
    note = _digest_file(target)
    if not note.exists():
        return True
    try:
        sha256, size = note.read_text().split()
    except ValueError:
        return False
    return target.stat().st_size == int(size) and _digests(target)[1] == sha256


def local_path(url: str, default_layout: str = "torch", progress: bool = True) -> Path:
    """A local file holding ``ssn://[LAYOUT/]NAME`` in its layout, downloaded and converted on first use."""
    name, layout = parse_url(url, default_layout)
    entry = get_entry(name)
    _check_layout(entry, layout)
    if entry.openmmlab_layout and layout == "openmmlab":
        return download(name, progress)
    target = cache.weights_root() / "converted" / f"{name}{checkpoints.TARGETS[layout]}"
    if target.exists() and _intact(target):
        return target
    sources = download_parts(name, progress)
    with _locked(target):
        if target.exists() and _intact(target):  # converted by another process meanwhile
            return target
        if target.exists():
            print(f"[ssn_plugins] {target} no longer matches the digest recorded when it was converted (damaged "
                  f"on disk?); converting {SCHEME}{name} again", file=sys.stderr)
            target.unlink()
        _digest_file(target).unlink(missing_ok=True)  # (a note never describes a file other than its own)
        try:
            converted = _convert(entry, sources, layout)
        except checkpoints.ConversionError as e:
            checked = entry.md5 is not None or entry.sha256_prefix is not None
            note = ""
            if not checked:  # nothing vouches for the files: set them aside so that the next use downloads again
                rejected = [str(_set_aside(source)) for source in sources.values()]
                note = f"; moved to {', '.join(rejected)}"
            files = ", ".join(str(source) for source in sources.values())
            raise ModelZooError(f"{SCHEME}{name} ({files}) cannot be converted for {layout}: {e}{note}") from e
        checkpoints.save_atomically(converted, target, pickled=layout == "detectron2")
        _record_digest(target)
        if progress:
            print(f"[ssn_plugins] {SCHEME}{name}: converted for {layout} into {target}", file=sys.stderr)
    return target
