"""Settings search inside one stage (e.g. the PTQ calibrator): grid, or Optuna TPE when installed.

Every trial writes its own directory; the state returned for the best trial points at
that trial's export, so the candidate the engine keeps is exactly the model whose
metric was measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slim_auto.stages import ModelState, Stage, StageContext, settings_grid
from slim_core.log import get_logger

__all__ = ["search_settings", "SearchResult"]

log = get_logger(__name__)

#: ``(state, model_dir) -> metric``: export ``state`` into ``model_dir`` and evaluate it there
Evaluate = Callable[[ModelState, Path], float]


class SearchResult:
    """The best trial: its state (``export_dir`` set to the trial's export), settings, metric and every trial."""

    def __init__(self, state: ModelState, settings: dict[str, Any], metric: float, trials: list[dict[str, Any]]) -> None:
        self.state, self.settings, self.metric, self.trials = state, settings, metric, trials


def _optuna_order(spec: Any, n: int, seed: int) -> list[dict[str, Any]] | None:
    """``n`` settings proposed by Optuna's TPE sampler, or None when Optuna is not installed."""
    try:
        import optuna
    except ImportError:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed), direction="maximize")
    proposals = []
    for _ in range(n):
        trial = study.ask()
        proposals.append({**spec.settings, **{k: trial.suggest_categorical(k, list(v)) for k, v in spec.search.items()}})
    return proposals or None


def search_settings(
    state: ModelState, spec: Any, stage: Stage, ctx: StageContext, evaluate: Evaluate, *, higher_is_better: bool = True
) -> SearchResult:
    """Run ``stage`` with each searched setting on a copy of ``state``; return the best.

    Args:
        evaluate: exports a trial's state into its own directory and returns the metric
            measured there (the engine's eval function on the runtime).

    Raises:
        Exception: the last trial's error when every trial failed.
    """
    grid = settings_grid(spec)
    n = min(spec.max_trials or len(grid), len(grid))
    order = _optuna_order(spec, n, ctx.train.seed) if n < len(grid) else None
    if order is None:
        order = grid[:n]
    sign = 1.0 if higher_is_better else -1.0
    best: SearchResult | None = None
    trials: list[dict[str, Any]] = []
    last_error: Exception | None = None
    seen: list[dict[str, Any]] = []
    for settings in order:
        if settings in seen:
            continue
        seen.append(settings)
        if best is not None and ctx.time_left() <= 0:
            break
        t0 = time.monotonic()
        try:
            trial_state = stage.run(state.copy(), stage.make_config(settings), ctx)
            model_dir = ctx.new_dir("trial")
            metric = float(evaluate(trial_state, model_dir))
            trial_state.export_dir = model_dir
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one bad setting does not end the search
            last_error = exc
            msg = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
            trials.append({"settings": settings, "error": msg})
            log.info("  trial %s failed: %s", settings, msg)
            continue
        trials.append({"settings": settings, "metric": metric, "seconds": round(time.monotonic() - t0, 3)})
        log.info("  trial %s: metric %.4f", settings, metric)
        if best is None or sign * metric > sign * best.metric:
            best = SearchResult(trial_state, settings, metric, trials)
        if ctx.reached is not None and ctx.reached(metric):
            break  # good enough: the target's metric part is met
    if best is None:
        assert last_error is not None
        raise last_error
    best.trials = trials
    return best
