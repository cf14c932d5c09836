"""The command-line tools, installed as console scripts (``ssn-train-net``, ``ssn-leaderboard``, ... in
pyproject.toml's ``[project.scripts]``); each also runs as ``python -m ssn_plugins.cli.NAME``, and the clone's
``tools/NAME.py`` are thin wrappers of them. This is the toolkit's top: it imports the library (the core and the
adapters) and the reproduction toolkit, and nothing there imports it (tests/test_package.py checks the arrows)."""
import argparse
import sys
from pathlib import Path
from typing import Optional

import ssn_plugins


def clone_root() -> Optional[Path]:
    """The repository's root when this package runs from a clone (its configs, MODEL_ZOO.md and tools beside it),
    else ``None`` (an installed package)."""
    root = Path(ssn_plugins.__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "tools" / "with_env.sh").is_file() else None


def jobs_root() -> Path:
    """Where launched jobs run and their relative paths (``configs/...``, ``datasets/...``) start: the clone's root
    from a clone, else the working directory (a config named ``configs/...`` then resolves to the shipped one)."""
    return clone_root() or Path.cwd()


def help_text(doc: str, tool: str) -> str:
    """A tool's docstring for its ``--help``, with the examples' ``python tools/<tool>.py`` written as this process
    was started when it is a console script (``ssn-leaderboard``): the clone's script is not there."""
    invoked = Path(sys.argv[0]).name
    return doc.replace(f"python tools/{tool}.py", invoked) if invoked.startswith("ssn-") else doc


def tool_parser(doc: str, tool: str, **options) -> argparse.ArgumentParser:
    """The argument parser of ``tools/<tool>.py``: its docstring (:func:`help_text`) as the description, kept as
    written."""
    return argparse.ArgumentParser(description=help_text(doc, tool),
                                   formatter_class=argparse.RawDescriptionHelpFormatter, **options)
