"""Constraints on architectures: maximum FLOPs, parameters, predicted or measured latency.

A :class:`Constraint` is a name, a function ``config -> value`` and an upper
bound. The helpers build the architecture of a config with a user function
(for an OFA supernet, ``ofa.export``) and measure it with slim-analysis.

Example:
    >>> c = Constraint("cost", lambda cfg: cfg["width"] * 10, max=6)
    >>> c.satisfied({"width": 0.5})
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from slim_core import ConfigError

__all__ = ["Constraint", "max_flops", "max_params", "max_latency", "as_constraints"]


@dataclass(frozen=True)
class Constraint:
    """``fn(config) <= max``.

    Args:
        name: what is bounded (``"flops"``, ``"latency_ms"``, ...), used in reports and errors.
        fn: ``config -> float``.
        max: the upper bound.
    """

    name: str
    fn: Callable[[dict[str, Any]], float]
    max: float

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ConfigError(f"constraint {self.name!r}: fn must be callable, got {type(self.fn).__name__}")
        if isinstance(self.max, bool) or not isinstance(self.max, (int, float)) or math.isnan(self.max):
            raise ConfigError(f"constraint {self.name!r}: max must be a number, got {self.max!r}")

    def value(self, config: dict[str, Any]) -> float:
        return float(self.fn(config))

    def satisfied(self, config: dict[str, Any]) -> bool:
        return self.value(config) <= self.max


def as_constraints(constraints: Any) -> list[Constraint]:
    """Accept None, one Constraint, a list of them, or ``{name: (fn, max)}``."""
    if constraints is None:
        return []
    if isinstance(constraints, Constraint):
        return [constraints]
    if isinstance(constraints, dict):
        out = []
        for name, spec in constraints.items():
            if not (isinstance(spec, (tuple, list)) and len(spec) == 2):
                raise ConfigError(f"constraint {name!r}: expected (fn, max), got {spec!r}")
            out.append(Constraint(str(name), spec[0], spec[1]))
        return out
    if isinstance(constraints, Sequence) and all(isinstance(c, Constraint) for c in constraints):
        names = [c.name for c in constraints]
        if len(set(names)) != len(names):
            raise ConfigError(f"constraint names must be unique, got {names}")
        return list(constraints)
    raise ConfigError(f"constraints must be Constraint objects or {{name: (fn, max)}}, got {type(constraints).__name__}")


def _measured(build: Callable[[dict[str, Any]], Any], measure: Callable[[Any], float]) -> Callable[[dict[str, Any]], float]:
    cache: dict[tuple, float] = {}

    def fn(config: dict[str, Any]) -> float:
        key = tuple(sorted((k, repr(v)) for k, v in config.items()))
        if key not in cache:
            cache[key] = float(measure(build(config)))
        return cache[key]

    return fn


def max_flops(limit: float, build: Callable[[dict[str, Any]], Any], input_shape: Sequence[int]) -> Constraint:
    """FLOPs (slim_analysis.flops) of ``build(config)`` on ``input_shape`` at most ``limit``."""
    import slim_analysis

    return Constraint("flops", _measured(build, lambda m: slim_analysis.flops(m, input_shape=list(input_shape))), float(limit))


def max_params(limit: float, build: Callable[[dict[str, Any]], Any]) -> Constraint:
    """Parameter count (slim_analysis.params) of ``build(config)`` at most ``limit``."""
    import slim_analysis

    return Constraint("params", _measured(build, slim_analysis.params), float(limit))


def max_latency(
    limit_ms: float,
    build: Callable[[dict[str, Any]], Any],
    input_shape: Sequence[int],
    *,
    predictor: Callable[[Any], float] | None = None,
    repeats: int = 20,
    warmup: int = 3,
) -> Constraint:
    """Latency in milliseconds of ``build(config)`` at most ``limit_ms``.

    Args:
        predictor: ``model -> ms`` (for instance a slim-analysis latency predictor); when
            None the latency is measured with ``slim_analysis.latency`` on this machine.
    """
    if predictor is None:
        import slim_analysis

        def predictor(model: Any) -> float:
            return _latency_ms(slim_analysis.latency(model, input_shape=list(input_shape), repeats=repeats, warmup=warmup))

    return Constraint("latency_ms", _measured(build, predictor), float(limit_ms))


def _latency_ms(result: Any) -> float:
    """Milliseconds from a number or a slim_analysis LatencyReport (its median at the first batch size)."""
    if isinstance(result, (int, float)):
        return float(result)
    median = getattr(result, "median_ms", None)
    if callable(median):
        return float(median())
    if median is not None:
        return float(median)
    raise ConfigError(f"cannot read milliseconds from latency result {result!r}")
