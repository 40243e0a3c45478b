"""Search spaces, one-shot supernets (OFA), DARTS and search strategies.

Example:
    >>> import slim_nas
    >>> space = slim_nas.SearchSpace({"width": slim_nas.Choice([0.5, 1.0]), "depth": slim_nas.IntRange(2, 4)})
    >>> space.size
    6
"""

from slim_core._paddle import require_paddle
from slim_nas.__about__ import __version__
from slim_nas.constraints import Constraint, max_flops, max_latency, max_params
from slim_nas.darts import DartsConfig, DartsNetwork, DartsResult, DartsSupernet, darts_search, derive_genotype
from slim_nas.errors import InfeasibleConstraintError, MissingExtraError, StorageError
from slim_nas.ofa import (
    OFA,
    ElasticModel,
    OFAConfig,
    OFAMobileNetV2,
    OFAResNet,
    SuperBatchNorm2D,
    SuperConv2D,
    SuperLinear,
    Supernet,
    mobilenetv2_space,
    recalibrate_bn,
    resnet_space,
    to_supernet,
    uniform_config,
)
from slim_nas.search import SearchResult, open_storage, pareto_front, plot_pareto, search
from slim_nas.space import Choice, FloatRange, IntRange, SearchSpace
from slim_nas.strategies import NSGA2, STRATEGIES, TPE, RandomSearch, SimulatedAnnealing, Strategy, TrialRecord

require_paddle()

__all__ = [
    "__version__",
    "SearchSpace",
    "Choice",
    "IntRange",
    "FloatRange",
    "search",
    "SearchResult",
    "TrialRecord",
    "pareto_front",
    "plot_pareto",
    "open_storage",
    "Strategy",
    "SimulatedAnnealing",
    "RandomSearch",
    "TPE",
    "NSGA2",
    "STRATEGIES",
    "Constraint",
    "max_flops",
    "max_params",
    "max_latency",
    "OFA",
    "OFAConfig",
    "Supernet",
    "OFAMobileNetV2",
    "OFAResNet",
    "to_supernet",
    "ElasticModel",
    "SuperConv2D",
    "SuperBatchNorm2D",
    "SuperLinear",
    "mobilenetv2_space",
    "resnet_space",
    "uniform_config",
    "recalibrate_bn",
    "DartsConfig",
    "DartsSupernet",
    "DartsNetwork",
    "DartsResult",
    "darts_search",
    "derive_genotype",
    "StorageError",
    "InfeasibleConstraintError",
    "MissingExtraError",
]
