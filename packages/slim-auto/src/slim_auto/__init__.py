"""Auto-compression from a YAML recipe to an accuracy target, with reports."""

from slim_auto.__about__ import __version__
from slim_core._paddle import require_paddle

require_paddle()

__all__ = ["__version__"]
