"""Checkpoint files read and written safely: ``torch.load`` weights-only with errors that name the file and what a
refused pickle imports, and writes that appear complete or not at all. Used by the converters, the model zoo and
the training tools' resume files.
"""
import errno
import os
import pickle
import pickletools
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import List, Optional

import torch

__all__ = ["ConversionError", "load_checkpoint_file", "save_atomically", "pickled_imports", "refused_import",
           "CONVERTER_TRUST"]


class ConversionError(ValueError):
    """A checkpoint this converter does not recognise, with the reason."""


def pickled_imports(path) -> Optional[List[str]]:
    """The ``module.name`` globals the pickle in ``path`` (a ``torch.save`` zip's ``data.pkl``, else the file) would
    import, read with :mod:`pickletools` without running anything; ``None`` when it is not a pickle at all."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if member is None:
                    return None
                data = archive.read(member)
        else:
            data = path.read_bytes()
        # the values pushed, as far as they matter here: strings (a STACK_GLOBAL's module and name), else None
        found, pushed, memo = [], [None], {}
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif name == "STACK_GLOBAL" and len(pushed) >= 2 and None not in pushed[-2:]:
                found.append(f"{pushed[-2]}.{pushed[-1]}")
            if name == "MEMOIZE":
                memo[len(memo)] = pushed[-1]
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = pushed[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(arg))
            elif opcode.stack_after:
                pushed.append(arg if isinstance(arg, str) and ("UNICODE" in name or "STRING" in name) else None)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile):  # not a pickle, or a damaged one
        return None
    return list(dict.fromkeys(found))


def refused_import(error: Exception, imports: List[str]) -> str:
    """What a weights-only load refused: the global torch names in ``error``, else the first of ``imports``."""
    refused = re.search(r"GLOBAL (\S+)", str(error))
    if refused:
        return refused.group(1)
    return ", ".join(imports[:6]) + (", ..." if len(imports) > 6 else "")


#: how to allow full unpickling, as the converter offers it (other tools name their own flag)
CONVERTER_TRUST = ("only if you trust where the file came from, load it with trust_pickle=True "
                   "(tools/convert_checkpoint.py --trust-pickle)")


def load_checkpoint_file(path, trust_pickle: bool = False, how_to_trust: str = CONVERTER_TRUST):
    """``torch.load`` of ``path`` on CPU, with every failure turned into a :class:`ConversionError` naming the file.

    ``weights_only=True`` unless ``trust_pickle``; the advice ``how_to_trust``
    (the caller's way to full unpickling, or why there is none) is given only
    when that is what refused the file.
    """
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"{path}: no such file")
    if not path.is_file():
        raise ConversionError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ConversionError(f"{path}: the file is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        # torch says "weights_only" for any input it cannot read; the advice only fits a real pickle that imports
        # something: name what it imports, so that the user sees what full unpickling would run
        imports = None if trust_pickle else pickled_imports(path)
        if imports:
            shown = refused_import(e, imports)
            kind = "" if zipfile.is_zipfile(path) else "a plain pickle, not a torch.save file (a detectron2 .pkl?); "
            raise ConversionError(f"{path}: refused by weights-only loading: {kind}it imports {shown}; "
                                  f"{how_to_trust}") from e
        if imports is None and not trust_pickle:  # torch's own text would advise weights_only=False here too
            raise ConversionError(f"{path}: not a readable checkpoint (neither a torch.save file nor a pickle)") from e
        first = str(e).strip().splitlines()[0]
        raise ConversionError(f"{path}: not a readable checkpoint ({first})") from e
    except Exception as e:  # noqa: BLE001 - truncated zips, foreign formats, ...: all end as one message
        raise ConversionError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e


def _file_mode() -> int:
    """The mode ``open`` gives a new file under the process's umask (0644 under the usual 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_atomically(obj: dict, path, pickled: bool = False) -> None:
    """Write ``obj`` to ``path`` (``pickle`` for detectron2's ``.pkl``, else ``torch.save``) atomically.

    The file appears complete or not at all: it is written beside ``path``
    and renamed over it, so an interrupted write never leaves a truncated
    file under the final name. Failures name the path.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise ConversionError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            if pickled:
                pickle.dump(obj, f)
            else:
                torch.save(obj, f)
        os.chmod(tmp, _file_mode())  # mkstemp's 0600 would keep a group-shared cache from the group
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports an unwritable file as a RuntimeError
        reason = getattr(e, "strerror", None) or str(e).strip().splitlines()[0]
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or "unexpected pos" in str(e):
            free = shutil.disk_usage(path.parent).free / 2**20
            reason += (f" (the write stopped short: {free:.0f} MiB are free in {path.parent}; a full disk, a quota or "
                       f"a file-size limit (ulimit -f) stops it so)")
        raise ConversionError(f"cannot write {path}: {reason}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
