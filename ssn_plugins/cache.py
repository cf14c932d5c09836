"""Where downloaded and derived files live: ``$SSN_PLUGINS_CACHE``, default ``~/.cache/ssn_plugins``.

The one reading of that setting (``tools/with_env.sh`` keeps its environments there too).
"""
import os
from pathlib import Path

__all__ = ["cache_root", "data_cache"]


def cache_root() -> Path:
    """``$SSN_PLUGINS_CACHE``, or ``~/.cache/ssn_plugins``."""
    return Path(os.environ.get("SSN_PLUGINS_CACHE") or Path.home() / ".cache" / "ssn_plugins")


def data_cache() -> Path:
    """Where data sets built from packages are kept: ``<cache root>/data``."""
    return cache_root() / "data"
