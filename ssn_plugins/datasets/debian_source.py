"""Files from Debian packages, fetched with ``apt-get source --download-only`` or ``apt-get download``.

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


def _apt_download(package: str, command: List[str], file_name: str, sha256: str, cache: Path) -> Path:
    """``cache/file_name``, fetched with ``apt-get <command>`` under private package lists, checked by hash."""
    target = Path(cache, file_name)
    if target.exists() and _sha256(target) == sha256:
        return target
    if shutil.which("apt-get") is None:
        raise SourceFetchError(f"apt-get is not available to download the Debian package {package!r}; "
                               f"place {file_name} (sha256 {sha256}) in {cache} by hand")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for sub in ("etc", "lists/partial", "cache/archives/partial", "download"):
            (scratch / sub).mkdir(parents=True)
        (scratch / "etc/bookworm.sources").write_text(SOURCES if command[0] == "source"
                                                      else SOURCES.replace("Types: deb-src", "Types: deb"))
        # The scratch directory is not readable by apt's _apt sandbox user; download as the caller.
        options = ["-oDir::Etc::SourceList=/dev/null", f"-oDir::Etc::SourceParts={scratch / 'etc'}",
                   f"-oDir::State::Lists={scratch / 'lists'}", f"-oDir::Cache={scratch / 'cache'}",
                   "-oDebug::NoLocking=1", "-oAPT::Sandbox::User=root", "-q"]
        downloaded = scratch / "download" / file_name
        for step in (["update"], command):
            result = subprocess.run(["apt-get", *options, *step], cwd=scratch / "download",
                                    capture_output=True, text=True)
            # The Debian-side files (.debian.tar.xz) may be missing on a mirror; only the upstream tarball matters.
            if result.returncode != 0 and not (step is command and downloaded.exists()):
                raise SourceFetchError(f"apt-get {' '.join(step)} failed for {package!r}:\n"
                                       + (result.stderr or result.stdout)[-2000:])
        if not downloaded.exists():
            raise SourceFetchError(f"apt-get did not fetch {file_name} for {package!r} (a different version?); "
                                   f"got {sorted(p.name for p in (scratch / 'download').iterdir())}")
        found = _sha256(downloaded)
        if found != sha256:
            raise SourceFetchError(f"{file_name} has sha256 {found}, expected {sha256}")
        shutil.move(str(downloaded), target)
    return target


def download_orig_tarball(package: str, tarball: str, sha256: str, cache: Path) -> Path:
    """``cache/tarball``, downloaded with apt-get on first use and checked against ``sha256``."""
    return _apt_download(package, ["source", "--download-only", package], tarball, sha256, cache)


def download_deb(package: str, version: str, sha256: str, cache: Path) -> Path:
    """The binary package ``package_version_all.deb`` in ``cache``, downloaded with apt-get on first use."""
    return _apt_download(package, ["download", f"{package}={version}"], f"{package}_{version}_all.deb", sha256,
                         cache)


def deb_members(deb: Path, names: List[str]) -> dict:
    """``{name: bytes}`` of files in a .deb's data archive (``names`` as in ``dpkg-deb -c``, without ``./``)."""
    import io
    with open(deb, "rb") as f:
        blob = f.read()
    if not blob.startswith(b"!<arch>\n"):
        raise SourceFetchError(f"{deb} is not a Debian package")
    offset, data = 8, None
    while offset < len(blob):  # the ar archive: 60-byte headers, members padded to even sizes
        header = blob[offset:offset + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
        if name.startswith("data.tar"):
            data = blob[offset + 60:offset + 60 + size]
            break
        offset += 60 + size + size % 2
    if data is None:
        raise SourceFetchError(f"{deb} has no data.tar member")
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for name in names:
            member = archive.extractfile("./" + name)
            if member is None:
                raise SourceFetchError(f"{deb} has no {name}")
            found[name] = member.read()
    return found


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

