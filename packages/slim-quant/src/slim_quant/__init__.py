"""Post-training quantization, QAT, weight-only and LLM quantization, quantization sensitivity."""

from slim_core._paddle import require_paddle
from slim_quant.__about__ import __version__

require_paddle()

__all__ = ["__version__"]
