"""The recipe-less strategy: escalate from cheap to expensive until the target is met.

1. PTQ, searching the calibrator (Optuna TPE when installed and the grid is large).
2. If the metric drops too much: PTQ with sensitivity-guided layer skipping (when
   slim-quant's PTQConfig offers ``max_metric_drop``), then QAT fine-tuned with
   distillation from the original model.
3. If a size target is missed on a Linear-heavy model (a transformer): int4 weight-only
   quantization.
4. If a speedup target is still missed: structured pruning for the missing factor,
   distillation fine-tuning, then quantization with the best calibrator found.

Models above 20M parameters try at most three calibrators.

Each plan starts from the original model; the engine keeps the best candidate of
all plans and stops as soon as one meets the whole target.
"""

from __future__ import annotations

from typing import Any

from slim_auto.candidates import Candidate, metric_ok, speedup
from slim_auto.recipe import Recipe, StageSpec, TrainConfig
from slim_auto.stages import config_fields, get_stage
from slim_core import ConfigError, SlimError

__all__ = ["AutoStrategy", "describe_model"]

CALIBRATORS = ("abs_max", "avg", "percentile", "kl", "mse")
#: speedup sought when the target sets none: a compressed model should be measurably faster
DEFAULT_SPEEDUP = 1.1
#: above this many parameters the calibrator search tries at most three settings
LARGE_MODEL = 20_000_000


def describe_model(layer: Any) -> dict[str, Any]:
    """``{"transformer": bool, "params": int, "linear_share": float}`` of a dygraph Layer."""
    if layer is None:
        return {"transformer": False, "params": 0, "linear_share": 0.0}
    import paddle

    total = linear = 0
    transformer = False
    for sub in layer.sublayers(include_self=True):
        if isinstance(sub, (paddle.nn.MultiHeadAttention, paddle.nn.TransformerEncoderLayer)):
            transformer = True
        if isinstance(sub, paddle.nn.Linear):
            linear += sum(int(p.size) for p in sub.parameters(include_sublayers=False))
    total = sum(int(p.size) for p in layer.parameters())
    share = linear / total if total else 0.0
    return {"transformer": transformer or share > 0.8 and total > 1_000_000, "params": total, "linear_share": share}


def _base_name(c: Candidate) -> str:
    """``"ptq"`` for ``"ptq [onnxruntime]"``: the plan's stage name without the runtime."""
    return c.name.split(" [", 1)[0]


def _available(kind: str) -> bool:
    try:
        get_stage(kind).check_available()
    except (ConfigError, SlimError):
        return False
    return True


class AutoStrategy:
    """Chooses the next plan from what has been measured so far.

    Args:
        engine: the :class:`~slim_auto.AutoCompression` running it (for the model, data,
            target and training settings).
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.info = describe_model(engine.model_layer)
        self.has_layer = engine.model_layer is not None
        self.has_train = engine.train_data is not None
        self.train: TrainConfig = engine.train_config

    def _calibrators(self) -> list[str]:
        try:
            from slim_quant import CALIBRATORS as registry  # type: ignore[attr-defined]

            names = [c for c in CALIBRATORS if c in registry]
        except (ImportError, AttributeError):
            names = list(CALIBRATORS)
        if self.info["transformer"]:
            names = [c for c in names if c != "kl"] or names  # KL histograms per token are slow and rarely better
        return names

    def _round_ok(self) -> bool:
        return "round_to" in (config_fields("prune") or [])

    def _ptq_fields(self) -> list[str]:
        return config_fields("ptq") or []

    def _best_ptq_settings(self, candidates: list[Candidate]) -> dict[str, Any]:
        ptq = [c for c in candidates if c.status == "ok" and _base_name(c) in ("ptq", "ptq-skip") and c.metric is not None]
        if not ptq:
            return {}
        sign = 1 if self.engine.target.higher_is_better else -1
        return dict(max(ptq, key=lambda c: sign * (c.metric or 0.0)).settings)

    def next_plan(self, plans: list[Any], candidates: list[Candidate], baseline: Candidate) -> tuple[str, Recipe] | None:
        """``(name, recipe)`` of the next plan, or None when nothing else is worth trying."""
        target = self.engine.target
        done = {p.name for p in plans}
        ok = [c for c in candidates[1:] if metric_ok(c, baseline, target)]
        want = target.min_speedup if target.min_speedup is not None else DEFAULT_SPEEDUP
        fast_enough = any((speedup(c, baseline) or 0) >= want for c in ok)
        train = self.train
        if "ptq" not in done and _available("ptq"):
            cal = self._calibrators()
            field = "calibrator" if "calibrator" in self._ptq_fields() else None
            search = {field: cal} if field and len(cal) > 1 else {}
            trials = 3 if self.info["params"] > LARGE_MODEL else 0  # each trial calibrates and evaluates the whole model
            return "ptq", Recipe(stages=(StageSpec(kind="ptq", search=search, max_trials=trials),), train=train, target=target)
        small_enough = target.max_size is None or any((c.size_bytes or 0) <= target.max_size for c in ok)
        if (
            not small_enough
            and self.info["linear_share"] > 0.5
            and "weight_only" not in done
            and self.has_layer
            and _available("weight_only")
        ):
            # Linear-heavy models (transformers): int4 weights cut the size where INT8 activations cannot
            return "weight_only", Recipe(stages=(StageSpec(kind="weight_only", settings={"bits": 4}),), train=train, target=target)
        ptq_ran = [c for c in candidates if _base_name(c) in ("ptq", "ptq-skip")]
        ptq_broken = bool(ptq_ran) and all(c.status == "failed" for c in ptq_ran)  # an error, not a metric problem
        if not ok and not ptq_broken:  # QAT exports like PTQ: after a PTQ error it would fail the same way
            if (
                "ptq-skip" not in done
                and _available("ptq")
                and "max_metric_drop" in self._ptq_fields()
                and target.max_metric_drop is not None
            ):
                settings = {
                    **self._best_ptq_settings(candidates),
                    "max_metric_drop": target.max_metric_drop,
                    "higher_is_better": target.higher_is_better,
                }
                return "ptq-skip", Recipe(stages=(StageSpec(kind="ptq", settings=settings, name="ptq-skip"),), train=train, target=target)
            if "qat" not in done and self.has_layer and self.has_train and _available("qat") and _available("distill"):
                return "qat", Recipe(stages=(StageSpec(kind="qat"),), train=train, target=target)
        if not fast_enough and "prune" not in done and self.has_layer and self.has_train and _available("prune") and _available("distill"):
            quant = [c for c in ok if _base_name(c).startswith(("ptq", "qat"))]
            s_q = max((speedup(c, baseline) or 0.0) for c in quant) if quant else 0.0
            need = want / max(s_q, 1.0)
            flops_ratio = float(min(0.75, max(0.2, 1.0 - 1.0 / max(need, 1.0))))
            stages = [
                # channel counts in multiples of 8 keep oneDNN on its fast kernels
                StageSpec(kind="prune", settings={"flops_ratio": round(flops_ratio, 3), **({"round_to": 8} if self._round_ok() else {})}),
                StageSpec(kind="distill"),
            ]
            if _available("ptq") and s_q > 1.0:  # quantize too only where INT8 measured faster than FP32 here
                stages.append(StageSpec(kind="ptq", settings=self._best_ptq_settings(candidates)))
            return "prune", Recipe(stages=tuple(stages), train=train, target=target)
        return None
