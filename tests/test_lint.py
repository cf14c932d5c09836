"""The linter CI runs: ruff with the project's ruff.toml over the whole tree finds nothing."""
import pytest

pytest.importorskip("ruff")  # needs the full stack; a torch-only install runs the core tests

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
