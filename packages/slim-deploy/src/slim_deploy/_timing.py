"""Wall-clock latency of a callable: warm-up, then repeated timed runs.

The statistics type is slim-analysis's :class:`slim_analysis.latency.LatencyStats`, so
a deploy benchmark row and an analysis latency report carry the same fields.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from slim_analysis.latency import LatencyStats

__all__ = ["LatencyStats", "measure", "stats_of"]


def stats_of(times_ms: list[float], batch_size: int = 1) -> LatencyStats:
    """Summary statistics of run times in milliseconds (one run = one batch)."""
    ms = sorted(float(t) for t in times_ms)
    q10, q90 = np.percentile(ms, [10, 90])
    return LatencyStats(
        batch_size=batch_size,
        median_ms=float(statistics.median(ms)),
        p10_ms=float(q10),
        p90_ms=float(q90),
        min_ms=ms[0],
        mean_ms=float(statistics.fmean(ms)),
        std_ms=float(statistics.pstdev(ms)) if len(ms) > 1 else 0.0,
        runs=len(ms),
    )


def measure(
    fn: Callable[[], object], *, warmup: int = 3, repeat: int = 20, max_seconds: float | None = None, batch_size: int = 1
) -> LatencyStats:
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
    return stats_of(times, batch_size)
