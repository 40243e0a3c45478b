"""Export (Paddle PIR / legacy, ONNX), predictors, output comparison, BN folding and re-parameterization."""

from slim_core._paddle import require_paddle
from slim_deploy.__about__ import __version__

require_paddle()

__all__ = ["__version__"]
