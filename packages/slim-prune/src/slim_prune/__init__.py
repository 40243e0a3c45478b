"""Dependency-aware structured pruning, sensitivity analysis, unstructured and N:M sparsity."""

from slim_core._paddle import require_paddle
from slim_prune.__about__ import __version__

require_paddle()

__all__ = ["__version__"]
