import os

import pytest
import torch

# SN/SSN layers compile their (N, C) statistics chain at the first training call of each process: several seconds
# (inductor's imports and code generation). The suite starts well over a hundred processes (the tools, spawned DDP
# workers), so by default it runs the eager chain, which gives the same results to rounding; the tests of the
# compiled chain, of the autograd paths and a few host-framework training loops turn compiling back on (the
# `compiled_chain` fixture), and tests/test_compiled_chain.py checks the two chains against each other.
# SSN_PLUGINS_COMPILE=1 in the environment runs the whole suite compiled.
os.environ.setdefault("SSN_PLUGINS_COMPILE", "0")


@pytest.fixture
def compiled_chain(monkeypatch):
    """The layers' statistics chain compiled, as outside the test suite."""
    monkeypatch.delenv("SSN_PLUGINS_COMPILE", raising=False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
