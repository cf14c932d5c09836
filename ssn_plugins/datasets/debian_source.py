"""Files from a Debian *source* package, fetched with ``apt-get source --download-only``.

The machines this project runs on reach only the package registries; Debian's
source packages carry real test assets (labelled video clips in
``pytorch-vision``). This needs neither root nor the machine's own ``deb-src``
entries: apt runs with a private sources list, package lists and cache under a
scratch directory, downloads the upstream tarball, and the tarball is checked
against a pinned SHA-256 before anything is extracted from it.
"""
import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import List

#: deb822 sources entry for bookworm's ``main`` sources (the distribution of these machines)
SOURCES = """Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


class SourceFetchError(RuntimeError):
    """The source package could not be downloaded or did not match its pinned hash."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_orig_tarball(package: str, tarball: str, sha256: str, cache: Path) -> Path:
    """``cache/tarball``, downloaded with apt-get on first use and checked against ``sha256``."""
    target = Path(cache, tarball)
    if target.exists() and _sha256(target) == sha256:
        return target
    if shutil.which("apt-get") is None:
        raise SourceFetchError(f"apt-get is not available to download the Debian source package {package!r}; "
                               f"place {tarball} (sha256 {sha256}) in {cache} by hand")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for sub in ("etc", "lists/partial", "cache/archives/partial", "download"):
            (scratch / sub).mkdir(parents=True)
        (scratch / "etc/bookworm-src.sources").write_text(SOURCES)
        # The scratch directory is not readable by apt's _apt sandbox user; download as the caller.
        options = ["-oDir::Etc::SourceList=/dev/null", f"-oDir::Etc::SourceParts={scratch / 'etc'}",
                   f"-oDir::State::Lists={scratch / 'lists'}", f"-oDir::Cache={scratch / 'cache'}",
                   "-oDebug::NoLocking=1", "-oAPT::Sandbox::User=root", "-q"]
        downloaded = scratch / "download" / tarball
        for command in (["update"], ["source", "--download-only", package]):
            result = subprocess.run(["apt-get", *options, *command], cwd=scratch / "download",
                                    capture_output=True, text=True)
            # The Debian-side files (.debian.tar.xz) may be missing on a mirror; only the upstream tarball matters.
            if result.returncode != 0 and not (command[0] == "source" and downloaded.exists()):
                raise SourceFetchError(f"apt-get {' '.join(command)} failed for {package!r}:\n"
                                       + (result.stderr or result.stdout)[-2000:])
        if not downloaded.exists():
            raise SourceFetchError(f"apt-get did not fetch {tarball} for {package!r} (a different version?); "
                                   f"got {sorted(p.name for p in (scratch / 'download').iterdir())}")
        found = _sha256(downloaded)
        if found != sha256:
            raise SourceFetchError(f"{tarball} has sha256 {found}, expected {sha256}")
        shutil.move(str(downloaded), target)
    return target


def extract_members(tarball: Path, prefix: str, names: List[str], dest: Path) -> List[Path]:
    """Extract ``prefix + name`` for each name into ``dest`` (flat); returns the written paths."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(tarball) as archive:
        for name in names:
            member = archive.getmember(prefix + name)
            with archive.extractfile(member) as src, open(dest / name, "wb") as out:
                shutil.copyfileobj(src, out)
            written.append(dest / name)
    return written

