"""Wall-clock latency of a callable: warm-up, then repeated timed runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["LatencyStats", "measure", "stats_of"]


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one configuration in milliseconds (median is the headline number)."""

    median_ms: float
    mean_ms: float
    p90_ms: float
    min_ms: float
    runs: int

    def to_dict(self) -> dict[str, float]:
        return {"median_ms": self.median_ms, "mean_ms": self.mean_ms, "p90_ms": self.p90_ms, "min_ms": self.min_ms, "runs": self.runs}


def measure(fn: Callable[[], object], *, warmup: int = 3, repeat: int = 20, max_seconds: float | None = None) -> LatencyStats:
    """Time ``fn()``: ``warmup`` untimed calls, then up to ``repeat`` timed ones (stopping early after ``max_seconds``)."""
    for _ in range(max(0, warmup)):
        fn()
    times = []
    start = time.perf_counter()
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
        if max_seconds is not None and time.perf_counter() - start > max_seconds and len(times) >= 3:
            break
    return stats_of(times)


def stats_of(times_ms: list[float]) -> LatencyStats:
    """Summary statistics of a list of run times in milliseconds."""
    arr = np.asarray(times_ms, dtype="float64")
    return LatencyStats(
        median_ms=float(np.median(arr)),
        mean_ms=float(arr.mean()),
        p90_ms=float(np.percentile(arr, 90)),
        min_ms=float(arr.min()),
        runs=len(arr),
    )
