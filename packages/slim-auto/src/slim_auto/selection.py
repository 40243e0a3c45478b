"""Selection: which candidate is delivered, kept up to date as candidates arrive and re-timed at the end.

The rule itself (:func:`slim_auto.candidates.select_best`) is pure; this class holds
the current best, delivers it to ``out_dir/model`` through the run store whenever it
changes, and at the end times the finalists again side by side, so the final choice
and the before/after latencies come from the same machine load.
"""

from __future__ import annotations

from collections.abc import Callable

from slim_auto.candidates import Candidate, metric_ok, pareto_front, primary_latency, select_best
from slim_auto.measure import Measurement
from slim_auto.recipe import TargetConfig
from slim_auto.runstore import RunStore
from slim_core.log import get_logger

__all__ = ["Selection"]

log = get_logger(__name__)

#: ``(candidate, measurement)``: time one candidate's export into ``measurement.latency_ms``
Timer = Callable[[Candidate, Measurement], None]


class Selection:
    """The best candidate so far, delivered.

    Args:
        store: where the chosen model is delivered.
        target: the run's target.
        on_change: called after a new best was delivered (the engine refreshes the report).
    """

    def __init__(self, store: RunStore, target: TargetConfig, on_change: Callable[[], None] | None = None) -> None:
        self.store = store
        self.target = target
        self.on_change = on_change
        self.best: Candidate | None = None

    def update(self, candidates: list[Candidate], *, force: bool = False) -> Candidate:
        """Choose again among ``candidates`` (the first is the original model); deliver when the choice changed."""
        best = select_best(candidates, candidates[0], self.target)
        if force or self.best is None or best.id != self.best.id:
            self.best = best
            self.store.deliver(best.model_dir)
            if best.id != candidates[0].id:
                log.info("best so far: #%d %s", best.id, best.name)
            if self.on_change is not None:
                self.on_change()
        return best

    def remeasure(self, candidates: list[Candidate], timer: Timer, rounds: int = 2, limit: int = 6) -> Candidate:
        """Time the original, the best and other Pareto candidates again, alternating (fastest of ``rounds``), and choose again."""
        assert self.best is not None
        baseline = candidates[0]
        if len([c for c in candidates if c.status == "ok"]) < 2:
            return self.best
        chosen = {baseline.id: baseline, self.best.id: self.best}
        # the Pareto front, then every candidate within the metric target (fastest first): a candidate
        # that looked slow during the search under a passing load spike gets its second chance here
        fine = sorted((c for c in candidates if metric_ok(c, baseline, self.target)), key=lambda c: primary_latency(c) or float("inf"))
        for c in [*pareto_front(candidates, self.target), *fine]:
            if len(chosen) >= limit:
                break
            chosen.setdefault(c.id, c)
        log.info("timing the original and %d candidate(s) again, side by side", len(chosen) - 1)
        timings: dict[int, list[dict[str, dict[str, float]]]] = {cid: [] for cid in chosen}
        for _ in range(rounds):
            for cid, c in chosen.items():
                m = Measurement()
                timer(c, m)
                timings[cid].append(m.latency_ms)
        for cid, c in chosen.items():
            merged: dict[str, dict[str, float]] = {}
            for lat in timings[cid]:
                for backend, per_batch in lat.items():
                    for batch, ms in per_batch.items():
                        old = merged.setdefault(backend, {}).get(batch)
                        merged[backend][batch] = ms if old is None else min(old, ms)
            if merged:
                c.notes.append(
                    "Latency re-measured at the end next to the other finalists (during the search: " + _lat_text(c.latency_ms) + ")."
                )
                c.latency_ms = merged
        return self.update(candidates)


def _lat_text(lat: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{b} batch {k}: {v:.3f} ms" for b, per in lat.items() for k, v in per.items()) or "none"
