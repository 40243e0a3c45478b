"""Decide how many and which channels each group loses.

Input: one importance score per channel for every prunable group. Output: the
channel indices to remove per group. Uniform and per-layer ratios are local;
a FLOPs/params target is reached either by a global ranking (channels of all
groups sorted by score normalized per group, removed cheapest first until the
analytic cost model meets the target) or by bisection on one uniform ratio.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from slim_core import ConfigError
from slim_prune.cost import CostModel

__all__ = ["keep_count", "local_plan", "global_plan", "uniform_plan", "removal_indices"]


def keep_count(size: int, ratio: float, round_to: int = 1) -> int:
    """Channels kept when ``ratio`` of ``size`` is removed, rounded to a multiple of ``round_to``."""
    keep = size - int(math.floor(size * ratio + 1e-9))
    if round_to > 1:
        if size <= round_to:
            return size
        keep = max(round_to, int(round(keep / round_to)) * round_to)
    return max(1, min(size, keep))


def removal_indices(scores: np.ndarray, n_remove: int) -> list[int]:
    """Indices of the ``n_remove`` lowest scores, sorted (stable for ties)."""
    if n_remove <= 0:
        return []
    order = np.argsort(scores, kind="stable")
    return sorted(int(i) for i in order[:n_remove])


def local_plan(scores: dict[int, np.ndarray], ratios: dict[int, float], round_to: int) -> dict[int, list[int]]:
    """Remove ``ratios[g]`` of each group's lowest-scored channels."""
    out = {}
    for g, r in ratios.items():
        size = len(scores[g])
        out[g] = removal_indices(scores[g], size - keep_count(size, r, round_to))
    return out


def _normalize(s: np.ndarray) -> np.ndarray:
    m = float(np.mean(np.abs(s)))
    return s / m if m > 0 else s


def global_plan(
    scores: dict[int, np.ndarray], model: CostModel, remove_fraction: float, *, max_ratio: float, round_to: int
) -> dict[int, list[int]]:
    """Remove the globally least important channels until ``remove_fraction`` of the cost is gone.

    Channels leave in units of ``round_to`` (the first unit of a group is its remainder, so
    counts stay multiples); a group never loses more than ``max_ratio`` of its channels.

    Raises:
        ConfigError: the target cannot be reached within ``max_ratio`` (nothing is changed).
    """
    total = model.value({})
    target = total * (1.0 - remove_fraction)
    order = {g: np.argsort(_normalize(s), kind="stable") for g, s in scores.items()}
    norm = {g: np.sort(_normalize(s), kind="stable") for g, s in scores.items()}
    kept = {g: len(s) for g, s in scores.items()}
    floor_keep = {g: keep_count(len(s), max_ratio, round_to) for g, s in scores.items()}
    values = model.entry_values(kept)
    current = sum(values)

    def next_unit(g: int) -> tuple[float, int] | None:
        size, k = len(scores[g]), kept[g]
        step = round_to if round_to > 1 else 1
        if round_to > 1 and k == size and size % round_to:
            step = size % round_to
        if k - step < floor_keep[g] or k - step < 1:
            return None
        removed = size - k
        return float(np.mean(norm[g][removed : removed + step])), step

    heap = []
    for g in scores:
        u = next_unit(g)
        if u is not None:
            heap.append((u[0], g, u[1]))
    heapq.heapify(heap)
    while current > target + 1e-9 and heap:
        _, g, step = heapq.heappop(heap)
        d, changed = model.delta(kept, values, g, kept[g] - step)
        if current + d < target and heap:
            # The last unit crosses the target: take the crossing unit that overshoots least.
            best = (current + d, g, step, d, changed)
            for _, g2, step2 in heap:
                d2, ch2 = model.delta(kept, values, g2, kept[g2] - step2)
                if target >= current + d2 > best[0]:
                    best = (current + d2, g2, step2, d2, ch2)
            if best[1] != g:
                heapq.heappush(heap, (0.0, g, step))  # put the skipped unit back (the loop ends now)
            _, g, step, d, changed = best
        kept[g] -= step
        for i, v in changed.items():
            values[i] = v
        current += d
        u = next_unit(g)
        if u is not None:
            heapq.heappush(heap, (u[0], g, u[1]))
    if current > target * 1.01 + 1e-9:
        reached = 1.0 - current / total if total else 0.0
        raise ConfigError(
            f"cannot remove {remove_fraction:.0%} of the cost: at most {reached:.1%} is removable with max_ratio={max_ratio} "
            "and the frozen/ignored groups; lower the target or raise max_ratio"
        )
    return {g: sorted(int(i) for i in order[g][: len(scores[g]) - kept[g]]) for g in scores if kept[g] < len(scores[g])}


def uniform_plan(
    scores: dict[int, np.ndarray], model: CostModel, remove_fraction: float, *, max_ratio: float, round_to: int
) -> dict[int, list[int]]:
    """One ratio for every group, found by bisection so the cost drops by ``remove_fraction``."""
    total = model.value({})
    target = total * (1.0 - remove_fraction)

    def cost(r: float) -> float:
        return model.value({g: keep_count(len(s), r, round_to) for g, s in scores.items()})

    if cost(max_ratio) > target * 1.01:
        reached = 1.0 - cost(max_ratio) / total if total else 0.0
        raise ConfigError(
            f"cannot remove {remove_fraction:.0%} of the cost with one uniform ratio: at most {reached:.1%} (max_ratio={max_ratio})"
        )
    lo, hi = 0.0, max_ratio
    for _ in range(40):
        mid = (lo + hi) / 2
        if cost(mid) > target:
            lo = mid
        else:
            hi = mid
    return local_plan(scores, dict.fromkeys(scores, hi), round_to)
