"""Settings search inside one stage (e.g. the PTQ calibrator): grid, or Optuna TPE when installed."""

from __future__ import annotations

import shutil
import time
from typing import Any

from slim_auto.measure import predictor_for
from slim_auto.stages import ModelState, Stage, StageContext, settings_grid

__all__ = ["search_settings"]


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
        proposals.append((trial, {**spec.settings, **{k: trial.suggest_categorical(k, list(v)) for k, v in spec.search.items()}}))
    return [p for _, p in proposals] if proposals else None


def search_settings(
    engine: Any, state: ModelState, spec: Any, stage: Stage, ctx: StageContext
) -> tuple[ModelState, dict[str, Any], list[dict[str, Any]]]:
    """Run ``stage`` with each searched setting on a copy of ``state``; return the best.

    The metric of each trial is measured by ``eval_fn`` on the exported trial model.

    Returns:
        ``(best state, its settings, trials)`` where trials are ``{"settings", "metric"}`` or ``{"settings", "error"}``.

    Raises:
        Exception: the last trial's error when every trial failed.
    """
    grid = settings_grid(spec)
    n = min(spec.max_trials or len(grid), len(grid))
    order = _optuna_order(spec, n, ctx.train.seed) if n < len(grid) else None
    if order is None:
        order = grid[:n]
    sign = 1.0 if engine.target.higher_is_better else -1.0
    best: tuple[float, ModelState, dict[str, Any]] | None = None
    trials: list[dict[str, Any]] = []
    last_error: Exception | None = None
    seen: list[dict[str, Any]] = []
    for k, settings in enumerate(order):
        if settings in seen:
            continue
        seen.append(settings)
        if best is not None and ctx.time_left() <= 0:
            break
        trial_state = state.copy()
        t0 = time.monotonic()
        try:
            trial_state = stage.run(trial_state, stage.make_config(settings), ctx)
            assert ctx.work_dir is not None
            model_dir = ctx.work_dir / f"trial-{k}"
            if model_dir.exists():
                shutil.rmtree(model_dir)
            engine.export(trial_state, model_dir)
            predictor = predictor_for(model_dir, engine.backends[0], engine.threads)
            try:
                metric = float(engine.eval_fn(predictor))
            finally:
                if hasattr(predictor, "close"):
                    predictor.close()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one bad setting does not end the search
            last_error = exc
            trials.append({"settings": settings, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            continue
        trials.append({"settings": settings, "metric": metric, "seconds": round(time.monotonic() - t0, 3)})
        if best is None or sign * metric > sign * best[0]:
            best = (metric, trial_state, settings)
        if ctx.reached is not None and ctx.reached(metric):
            break  # good enough: the target's metric part is met
    if best is None:
        assert last_error is not None
        raise last_error
    return best[1], best[2], trials
