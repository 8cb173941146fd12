"""elfscreen's science: structures, ELF grids, topology (φ, φ*) and Tc.

Nothing here imports web or queue code; the CLI, the API and the workers all call these functions.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("elfscreen")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
