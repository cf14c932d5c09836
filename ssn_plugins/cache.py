"""Where downloaded and derived files live: ``$SSN_PLUGINS_CACHE``, default ``~/.cache/ssn_plugins``.

The one reading of that setting (``tools/with_env.sh`` keeps its environments there too), and of
``$SSN_PLUGINS_WEIGHTS``, which moves the model zoo's files alone (to storage shared by a group, say)
and leaves the environments where they are.
"""
import os
from pathlib import Path

__all__ = ["cache_root", "data_cache", "weights_root"]


def cache_root() -> Path:
    """``$SSN_PLUGINS_CACHE``, or ``~/.cache/ssn_plugins``."""
    return Path(os.environ.get("SSN_PLUGINS_CACHE") or Path.home() / ".cache" / "ssn_plugins")


def data_cache() -> Path:
    """Where data sets built from packages are kept: ``<cache root>/data``."""
    return cache_root() / "data"


def weights_root() -> Path:
    """Where the model zoo keeps downloads and converted files: ``$SSN_PLUGINS_WEIGHTS``, or
    ``<cache root>/checkpoints``."""
    shared = os.environ.get("SSN_PLUGINS_WEIGHTS")
    return Path(shared) if shared else cache_root() / "checkpoints"
