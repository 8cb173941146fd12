"""elfscreen's science: structures, ELF grids, topology (φ, φ*) and Tc.

Nothing here imports web or queue code; the CLI, the API and the workers all call these functions.
"""
import os
from importlib.metadata import PackageNotFoundError, version as _version
from pathlib import Path

try:
    __version__ = _version("elfscreen")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"


def cache_root() -> Path:
    """Where elfscreen keeps what it makes once per machine (compiled kernels, unpacked pseudopotentials):
    ``$ELFSCREEN_CACHE`` or ``~/.cache/elfscreen``."""
    return Path(os.environ.get("ELFSCREEN_CACHE") or Path.home() / ".cache" / "elfscreen")
