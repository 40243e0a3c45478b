"""Candidates (measured models) and the choice of the best one.

Every finished stage yields a :class:`Candidate`. The best is chosen on the
Pareto front of metric vs latency: among candidates that meet the metric target,
the fastest; when none meets it, the one with the best metric.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from slim_auto.recipe import TargetConfig

__all__ = ["Candidate", "primary_latency", "metric_ok", "meets_target", "select_best", "pareto_front", "unmet_reasons"]


@dataclass
class Candidate:
    """One measured model.

    Attributes:
        id: running number (0 is the original model).
        name: ``"baseline"`` or the stages that made it (``"prune > distill"``).
        plan: index of the plan (recipe) that made it, -1 for the baseline.
        stage: index of the stage within the plan.
        status: ``"ok"``, ``"failed"`` (a stage or the eval function raised) or ``"time"``.
        metric, flops, params, size_bytes: measured values (None when not measured).
        latency_ms: ``{backend: {batch: median ms}}`` measured on the exported model.
        settings: the stage settings used (the chosen ones when a search ran).
        trials: ``[{"settings": ..., "metric": ...}]`` of a settings search.
        model_dir: directory (relative to the output dir) of the exported model.
        seconds: wall time of the stage.
        error: the error message of a failed stage.
        notes: anything that could not be measured, and why (sentences).
        runtime: the runtime an inference model was converted for (empty: every allowed runtime).
    """

    id: int
    name: str
    plan: int = -1
    stage: int = -1
    status: str = "ok"
    metric: float | None = None
    flops: int | None = None
    params: int | None = None
    size_bytes: int | None = None
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)
    model_dir: str = ""
    seconds: float = 0.0
    error: str = ""
    notes: list[str] = field(default_factory=list)
    train: dict[str, Any] = field(default_factory=dict)
    runtime: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _first_batch(c: Candidate) -> str | None:
    for per_batch in c.latency_ms.values():
        for batch in per_batch:
            return batch
    return None


def primary_latency(c: Candidate, batch: str | None = None) -> float | None:
    """Latency on the fastest measured runtime at the first batch size (what speedup is computed on)."""
    batch = batch if batch is not None else _first_batch(c)
    values = [float(per[batch]) for per in c.latency_ms.values() if batch in per and per[batch]]
    return min(values) if values else None


def speedup(c: Candidate, baseline: Candidate) -> float | None:
    """The original model's latency on its fastest runtime over the candidate's on its fastest, at the first batch size.

    Comparing best with best keeps the claim honest when candidates run on different
    runtimes (an INT8 model on ONNX Runtime against the original on Paddle and ONNX Runtime).
    """
    batch = _first_batch(baseline)
    before, after = primary_latency(baseline, batch), primary_latency(c, batch)
    if before is None or not after:
        return None
    return before / after


__all__.append("speedup")


def _drop(c: Candidate, baseline: Candidate, target: TargetConfig) -> float | None:
    if c.metric is None or baseline.metric is None:
        return None
    return (baseline.metric - c.metric) if target.higher_is_better else (c.metric - baseline.metric)


def metric_ok(c: Candidate, baseline: Candidate, target: TargetConfig) -> bool:
    """Whether ``c`` meets the metric part of the target."""
    if c.status != "ok" or c.metric is None:
        return False
    if target.max_metric_drop is not None:
        drop = _drop(c, baseline, target)
        if drop is None or drop > target.max_metric_drop + 1e-12:
            return False
    if target.min_metric is not None:
        if target.higher_is_better and c.metric < target.min_metric:
            return False
        if not target.higher_is_better and c.metric > target.min_metric:
            return False
    return True


def unmet_reasons(c: Candidate, baseline: Candidate, target: TargetConfig) -> list[str]:
    """Human-readable reasons why ``c`` misses the target (empty when it meets it)."""
    reasons = []
    if c.status != "ok" or c.metric is None:
        return [f"candidate {c.status}"]
    drop = _drop(c, baseline, target)
    if target.max_metric_drop is not None and (drop is None or drop > target.max_metric_drop + 1e-12):
        reasons.append(f"metric drop {drop:.4g} > {target.max_metric_drop:g}")
    if target.min_metric is not None and not metric_ok(
        c, baseline, TargetConfig(min_metric=target.min_metric, higher_is_better=target.higher_is_better)
    ):
        reasons.append(f"metric {c.metric:.4g} misses {target.min_metric:g}")
    if target.min_speedup is not None:
        s = speedup(c, baseline)
        if s is None or s < target.min_speedup:
            reasons.append(f"speedup {'unmeasured' if s is None else f'{s:.2f}x'} < {target.min_speedup:g}x")
    if target.max_size is not None and (c.size_bytes is None or c.size_bytes > target.max_size):
        reasons.append(f"size {c.size_bytes} > {target.max_size} bytes")
    return reasons


def meets_target(c: Candidate, baseline: Candidate, target: TargetConfig) -> bool:
    """Whether ``c`` meets every part of the target."""
    return c.status == "ok" and not unmet_reasons(c, baseline, target)


def _lat(c: Candidate) -> float:
    v = primary_latency(c)
    return v if v is not None else float("inf")


def _metric_key(c: Candidate, target: TargetConfig) -> float:
    if c.metric is None:
        return float("-inf")
    return c.metric if target.higher_is_better else -c.metric


LATENCY_TIE = 0.05


def select_best(candidates: list[Candidate], baseline: Candidate, target: TargetConfig) -> Candidate:
    """The candidate to deliver.

    Order of preference: meets the whole target (then fastest, then best metric, then
    smallest); else meets the metric target (same order: fastest first); else best metric.
    Latencies within ``LATENCY_TIE`` (5%) of the fastest count as equal, so the metric decides.
    """
    ok = [c for c in candidates if c.status == "ok" and c.metric is not None]
    if not ok:
        return baseline
    full = [c for c in ok if meets_target(c, baseline, target)]
    metric_fine = [c for c in ok if metric_ok(c, baseline, target)]
    pool = full or metric_fine
    if pool:
        # latencies within LATENCY_TIE of the fastest are measurement noise, not a speed-up:
        # among those, the better metric wins (a 0.7% faster model must not cost 2 points)
        fastest = min(_lat(c) for c in pool)
        tied = [c for c in pool if _lat(c) <= fastest * (1.0 + LATENCY_TIE)]
        return max(tied, key=lambda c: (_metric_key(c, target), -_lat(c), -(c.size_bytes or 0), -c.id))
    return max(ok, key=lambda c: (_metric_key(c, target), -_lat(c), -c.id))


def pareto_front(candidates: list[Candidate], target: TargetConfig) -> list[Candidate]:
    """Candidates not dominated on (metric, latency)."""
    ok = [c for c in candidates if c.status == "ok" and c.metric is not None and primary_latency(c) is not None]
    front = []
    for c in ok:
        dominated = any(
            (_metric_key(o, target) >= _metric_key(c, target) and _lat(o) <= _lat(c))
            and (_metric_key(o, target) > _metric_key(c, target) or _lat(o) < _lat(c))
            for o in ok
        )
        if not dominated:
            front.append(c)
    return sorted(front, key=_lat)
