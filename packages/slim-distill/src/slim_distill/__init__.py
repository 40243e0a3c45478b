"""slim-distill: knowledge distillation that plugs into any Paddle training loop.

Example:
    >>> import slim_distill
    >>> cfg = slim_distill.DistillConfig.from_dict({"logits": {"loss": "kl", "temperature": 4.0, "weight": 1.0}})
    >>> distiller = slim_distill.Distiller(student, teacher, cfg)   # doctest: +SKIP
    >>> logits = distiller(x); loss = ce(logits, y) + distiller.loss()  # doctest: +SKIP
"""

from slim_core._paddle import require_paddle
from slim_distill.__about__ import __version__

require_paddle()

from slim_distill.config import DistillConfig, DMLConfig, LogitsConfig, PairConfig  # noqa: E402
from slim_distill.distiller import Distiller, MutualLearner, make_adaptor  # noqa: E402
from slim_distill.errors import DistillError, LayerNotFoundError, ShapeMismatchError  # noqa: E402
from slim_distill.fit import FitResult, fit, load_checkpoint  # noqa: E402
from slim_distill.hooks import FeatureRecorder  # noqa: E402
from slim_distill.losses import LOSSES, DistillLoss, register_loss  # noqa: E402

__all__ = [
    "__version__",
    "Distiller",
    "MutualLearner",
    "DistillConfig",
    "LogitsConfig",
    "PairConfig",
    "DMLConfig",
    "fit",
    "FitResult",
    "load_checkpoint",
    "LOSSES",
    "DistillLoss",
    "register_loss",
    "make_adaptor",
    "FeatureRecorder",
    "DistillError",
    "LayerNotFoundError",
    "ShapeMismatchError",
]
