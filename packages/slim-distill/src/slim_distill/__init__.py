"""Knowledge distillation: losses, feature hooks, the Distiller, mutual learning."""

from slim_core._paddle import require_paddle
from slim_distill.__about__ import __version__

require_paddle()

__all__ = ["__version__"]
