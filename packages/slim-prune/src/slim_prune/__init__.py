"""slim-prune: dependency-aware structured pruning, sensitivity analysis, unstructured and N:M sparsity.

Example:
    >>> import paddle, slim_prune
    >>> model = paddle.vision.models.resnet18(num_classes=10)
    >>> result = slim_prune.prune_(model, slim_prune.PruneConfig(flops_ratio=0.5, criterion="fpgm"),
    ...                            example_inputs=paddle.randn([1, 3, 64, 64]))
    >>> print(result.summary())  # doctest: +SKIP
"""

from slim_core._paddle import require_paddle
from slim_prune.__about__ import __version__

require_paddle()

from slim_prune.config import PruneConfig  # noqa: E402
from slim_prune.criteria import CRITERIA, ChannelSlice  # noqa: E402
from slim_prune.io import load_pruned, save_pruned  # noqa: E402
from slim_prune.layers import HANDLERS, LayerHandler, handler_for, register_handler  # noqa: E402
from slim_prune.prune import PruneError, apply_plan, plan_pruning, prune_  # noqa: E402
from slim_prune.result import PruneResult  # noqa: E402
from slim_prune.sensitivity import Sensitivity, sensitivity  # noqa: E402
from slim_prune.sparsity import (  # noqa: E402
    GMPPruner,
    GMPSchedule,
    NMConfig,
    SparseMasks,
    SparsityConfig,
    check_nm,
    sparsify_,
    sparsify_nm_,
)
from slim_prune.transformer import (  # noqa: E402
    TransformerPruneConfig,
    TransformerPruneResult,
    prune_ffn_,
    prune_heads_,
    prune_transformer_,
)

__all__ = [
    "__version__",
    "PruneConfig",
    "PruneResult",
    "PruneError",
    "prune_",
    "plan_pruning",
    "apply_plan",
    "CRITERIA",
    "ChannelSlice",
    "HANDLERS",
    "LayerHandler",
    "handler_for",
    "register_handler",
    "save_pruned",
    "load_pruned",
    "Sensitivity",
    "sensitivity",
    "SparsityConfig",
    "NMConfig",
    "GMPSchedule",
    "GMPPruner",
    "SparseMasks",
    "sparsify_",
    "sparsify_nm_",
    "check_nm",
    "TransformerPruneConfig",
    "TransformerPruneResult",
    "prune_transformer_",
    "prune_heads_",
    "prune_ffn_",
]
