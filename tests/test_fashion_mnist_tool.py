"""tools/train_fashion_mnist.py (the torch-only demo), end to end on the real Fashion-MNIST data, at a tiny size."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torchvision")  # needs the full stack; a torch-only install runs the core tests

pytestmark = pytest.mark.slow  # pytest -m "not slow" leaves it out; CI runs it

REPO = Path(__file__).resolve().parents[1]


def test_short_ssn_run_learns_and_reports_selections(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train_fashion_mnist.py"), "--epochs", "0.05", "--stat-batches", "5"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    accuracy = float(re.search(r"batch-average statistics \(5 batches\): ([\d.]+) %", out).group(1))
    assert accuracy > 40.0, out  # chance is 10 %
    assert "normalizer per layer" in out and "3.norm1" in out
    # the radius reached 1 at the end, so every ratio vector is one-hot
    assert "soft" not in out.split("normalizer per layer")[1]
