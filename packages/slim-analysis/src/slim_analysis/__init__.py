"""FLOPs, parameters, model size, per-layer summary, measured latency and a latency predictor.

FLOPs are multiply-accumulates (1 FLOP = 1 MAC), see :mod:`slim_analysis.flops`.

Example:
    >>> import paddle, slim_analysis
    >>> net = paddle.vision.models.resnet18(num_classes=10)
    >>> slim_analysis.flops(net, [1, 3, 64, 64]) > 1e8
    True
"""

from slim_analysis.__about__ import __version__
from slim_core._paddle import require_paddle

require_paddle()

from slim_analysis.flops import FLOP_COUNTERS, FlopCount, flops, node_flops, params, register_flops, unknown_ops  # noqa: E402
from slim_analysis.latency import LatencyConfig, LatencyReport, LatencyStats, latency  # noqa: E402
from slim_analysis.predictor import LatencyPredictor, Prediction  # noqa: E402
from slim_analysis.size import DtypeStats, ModelSize, model_size  # noqa: E402
from slim_analysis.summary import LayerRow, ModelSummary, summary  # noqa: E402

__all__ = [
    "__version__",
    "flops",
    "FlopCount",
    "params",
    "node_flops",
    "unknown_ops",
    "FLOP_COUNTERS",
    "register_flops",
    "summary",
    "ModelSummary",
    "LayerRow",
    "model_size",
    "ModelSize",
    "DtypeStats",
    "latency",
    "LatencyConfig",
    "LatencyReport",
    "LatencyStats",
    "LatencyPredictor",
    "Prediction",
]
