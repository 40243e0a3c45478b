"""FLOPs, parameters, model size, per-layer summary, measured latency and a latency predictor."""

from slim_analysis.__about__ import __version__
from slim_core._paddle import require_paddle

require_paddle()

__all__ = ["__version__"]
