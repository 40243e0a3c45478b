"""Auto-compression from a YAML recipe (or none) to an accuracy target, resumable, with reports.

Example:
    >>> import slim_auto
    >>> r = slim_auto.load_recipe({"stages": [{"ptq": {"calibrator": "kl"}}], "target": {"max_metric_drop": 0.005}})
    >>> r.stages[0].kind, r.target.max_metric_drop
    ('ptq', 0.005)
"""

from slim_auto.__about__ import __version__
from slim_auto.act import ACT_KEYS, ActTranslation, is_act_recipe, load_any_recipe, translate_act
from slim_auto.candidates import Candidate, pareto_front, select_best
from slim_auto.engine import AutoCompression, CompressionResult, CompressionRunError, accuracy_eval
from slim_auto.recipe import STAGE_KINDS, Recipe, StageSpec, TargetConfig, TrainConfig, load_recipe
from slim_auto.report import RunSummary, write_report
from slim_auto.routes import ROUTES, Route, register_route
from slim_auto.runstore import RunStore
from slim_auto.stages import (
    APPLY_HANDLERS,
    STAGES,
    Applied,
    ApplyStage,
    ModelState,
    Stage,
    StageContext,
    StageUnavailableError,
    known_kinds,
    register_apply,
)
from slim_core._paddle import require_paddle

require_paddle()

__all__ = [
    "__version__",
    "AutoCompression",
    "CompressionResult",
    "CompressionRunError",
    "accuracy_eval",
    "Recipe",
    "StageSpec",
    "TrainConfig",
    "TargetConfig",
    "STAGE_KINDS",
    "load_recipe",
    "load_any_recipe",
    "translate_act",
    "is_act_recipe",
    "ActTranslation",
    "ACT_KEYS",
    "Candidate",
    "select_best",
    "pareto_front",
    "RunSummary",
    "write_report",
    "STAGES",
    "Stage",
    "StageContext",
    "ModelState",
    "StageUnavailableError",
    "known_kinds",
    "Applied",
    "ApplyStage",
    "APPLY_HANDLERS",
    "register_apply",
    "Route",
    "ROUTES",
    "register_route",
    "RunStore",
]
