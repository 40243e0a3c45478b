"""Selection: which candidate is delivered, kept up to date as candidates arrive and re-timed at the end.

The rule itself (:func:`slim_auto.candidates.select_best`) is pure; this class holds
the current best, delivers it to ``out_dir/model`` through the run store whenever it
changes, and at the end times the finalists again side by side, so the final choice
and the before/after latencies come from the same machine load.
"""

from __future__ import annotations

from collections.abc import Callable

from slim_auto.candidates import Candidate, metric_ok, pareto_front, primary_latency, select_best
from slim_auto.recipe import TargetConfig
from slim_auto.runstore import RunStore
from slim_core.log import get_logger

__all__ = ["Selection"]

log = get_logger(__name__)

#: ``(candidates) -> {id: {runtime: {batch: ms}}}``: time the candidates' exports side by side
Timer = Callable[[list[Candidate]], dict[int, dict[str, dict[str, float]]]]


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

    def remeasure(self, candidates: list[Candidate], timer: Timer, limit: int = 6) -> Candidate:
        """Time the original, the best and the other finalists again in alternation, and choose again.

        Finalists: the Pareto front, then every candidate within the metric target (fastest first),
        at most ``limit`` models in all. ``timer`` returns ``{id: {runtime: {batch: ms}}}``.
        """
        assert self.best is not None
        baseline = candidates[0]
        if len([c for c in candidates if c.status == "ok"]) < 2:
            return self.best
        chosen = {baseline.id: baseline, self.best.id: self.best}
        # a candidate that looked slow during the search under a passing load spike gets its second chance here
        fine = sorted((c for c in candidates if metric_ok(c, baseline, self.target)), key=lambda c: primary_latency(c) or float("inf"))
        for c in [*pareto_front(candidates, self.target), *fine]:
            if len(chosen) >= limit:
                break
            chosen.setdefault(c.id, c)
        log.info("timing the original and %d candidate(s) again, in alternation", len(chosen) - 1)
        timings = timer(list(chosen.values()))
        for cid, c in chosen.items():
            lat = timings.get(cid) or {}
            if lat:
                c.notes.append(
                    f"Latency timed at the end in alternation with the other finalists (during the search: {_lat_text(c.latency_ms)})."
                )
                c.latency_ms = {**c.latency_ms, **lat}
        return self.update(candidates)


def _lat_text(lat: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{b} batch {k}: {v:.3f} ms" for b, per in lat.items() for k, v in per.items()) or "none"
