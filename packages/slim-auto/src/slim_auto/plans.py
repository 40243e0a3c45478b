"""The plan runner: runs the stages of one plan (a recipe) and turns each into measured candidates.

A stage runs on the state the previous stage left; its result is exported, measured
and recorded as a :class:`~slim_auto.candidates.Candidate`. On an inference model a
PTQ stage runs once per allowed runtime (route): each route is a candidate of its
own, a failing route is a failed candidate, and the plan continues from the best
route. Finished stages are checkpointed (weights as ``.npz``) so a killed run
resumes from the last finished stage.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from slim_auto.candidates import Candidate
from slim_auto.recipe import Recipe, TrainConfig
from slim_auto.routes import Route, routes_for
from slim_auto.search import search_settings
from slim_auto.stages import ModelState, Stage, StageContext, get_stage
from slim_core import require_paddle
from slim_core.log import get_logger

if TYPE_CHECKING:  # pragma: no cover
    from slim_auto.engine import AutoCompression

__all__ = ["Plan", "PlanRunner", "error_line"]

log = get_logger(__name__)


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters)."""
    text = str(exc).strip()
    if type(exc).__name__ == "IsolatedError":  # the child's own "Type: message" says more than the wrapper
        return text.splitlines()[0][:300] if text else "the child process failed"
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}".rstrip(": ")


@dataclass
class Plan:
    """One recipe being run: how many stages are done, what each chose, which candidate each kept."""

    name: str
    recipe: Recipe
    done: int = 0
    status: str = "pending"
    chosen: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "recipe": self.recipe.to_dict(),
            "done": self.done,
            "status": self.status,
            "chosen": self.chosen,
            "records": self.records,
            "kept": self.kept,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls(d["name"], Recipe.from_dict(d["recipe"]), d["done"], d["status"], d["chosen"], d.get("records", []), d.get("kept", []))


class PlanRunner:
    """Runs plans for an engine (its store, candidates, context and measurement)."""

    def __init__(self, engine: AutoCompression) -> None:
        self.engine = engine
        self.proven_routes: set[str] = set()

    # ------------------------------------------------------------------ helpers
    def _seed(self, pi: int, si: int, train: TrainConfig) -> None:
        paddle = require_paddle()
        paddle.seed(train.seed + 1000 * pi + si)
        np.random.seed((train.seed + 1000 * pi + si) % 2**32)

    def _routes(self, stage: Stage, state: ModelState) -> list[Route | None]:
        if stage.per_route and state.layer is None and not state.int8:
            routes = routes_for(self.engine.backends)
            return list(routes) or [None]
        return [None]

    def _replay(self, pi: int, plan: Plan, state: ModelState) -> ModelState:
        """Rebuild the model after ``plan.done`` finished stages (resume)."""
        eng = self.engine
        for si in range(plan.done):
            spec = plan.recipe.stages[si]
            stage = get_stage(spec.kind)
            if state.layer is None:
                cid = plan.kept[si] if si < len(plan.kept) else None
                cand = next((c for c in eng.candidates if c.id == cid), None) if cid is not None else None
                if cand is None:
                    cand = next(c for c in eng.candidates if c.plan == pi and c.stage == si and c.status == "ok")
                state.path = eng.store.out_dir / cand.model_dir
                state.int8 = stage.kind in ("ptq", "qat", "weight_only")
                state.runtime = cand.runtime
                continue
            if si > 0:
                eng.store.load_weights(state.layer, pi, si - 1)
            ctx = eng.context(plan.recipe.train_for(spec), eng.store.work_dir(pi, si))
            ctx.record = dict(plan.records[si]) if si < len(plan.records) else {}
            self._seed(pi, si, ctx.train)
            state = stage.rebuild(state, stage.make_config(plan.chosen[si]), ctx)
        if state.layer is not None:
            eng.store.load_weights(state.layer, pi, plan.done - 1)
        return state

    # ------------------------------------------------------------------ one candidate
    def _candidate(
        self, pi: int, si: int, plan: Plan, stage: Stage, state: ModelState, ctx: StageContext, route: Route | None
    ) -> tuple[Candidate, ModelState]:
        eng = self.engine
        spec = plan.recipe.stages[si]
        names = [s.label for s in plan.recipe.stages[: si + 1]]
        cid = len(eng.candidates)
        cand = Candidate(id=cid, name=" > ".join(names) + (f" [{route.name}]" if route else ""), plan=pi, stage=si)
        cand.runtime = route.name if route else ""
        cand.train = ctx.train.to_dict() if stage.trains else {}
        ctx.route = route
        log.info("stage %s started (candidate #%d)", cand.name, cid)
        t0 = time.monotonic()
        n_applied = len(state.applied)
        try:
            self._seed(pi, si, ctx.train)
            metric = None
            if spec.search:
                res = search_settings(state, spec, stage, ctx, eng.export_and_evaluate, higher_is_better=eng.target.higher_is_better)
                state, settings, metric, cand.trials = res.state, res.settings, res.metric, res.trials
            else:
                settings = dict(spec.settings)
                state = stage.run(state, stage.make_config(settings), ctx)
            cand.settings = settings
            for entry in state.applied[n_applied:]:
                if entry.get("stage") == "ptq-skipped-layers":
                    cand.notes.append(f"Kept in float by the sensitivity search: {', '.join(entry['layers'])}.")
            if ctx.outcome is not None:
                cand.notes.append(f"Trained {ctx.outcome.steps} steps (stopped: {ctx.outcome.stopped}).")
                if ctx.outcome.stopped == "time":
                    cand.status = "time"
            rel = eng.store.candidate_rel(cid)
            eng.fill(cand, eng.measure(state, rel, metric=metric))
            cand.model_dir = rel
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a failing stage, route or eval_fn is a failed candidate; earlier results stay
            cand.status = "failed"
            cand.error = error_line(exc)
            log.info("candidate #%d %s failed: %s", cid, cand.name, cand.error)
            log.debug("details", exc_info=True)
        cand.seconds = time.monotonic() - t0
        if cand.status != "failed":
            log.info("candidate #%d %s: %s", cid, cand.name, eng.describe(cand))
        return cand, state

    # ------------------------------------------------------------------ a plan
    def run(self, pi: int, plan: Plan) -> None:
        """Run the unfinished stages of ``plan`` (after replaying the finished ones)."""
        eng = self.engine
        state = eng.fresh_state()
        if plan.done:
            state = self._replay(pi, plan, state)
        plan.status = "running"
        eng.save()
        for si in range(plan.done, len(plan.recipe.stages)):
            if eng.time_up():
                plan.status = "time"
                eng.save()
                return
            spec = plan.recipe.stages[si]
            stage = get_stage(spec.kind)
            work = eng.store.work_dir(pi, si)
            routes = self._routes(stage, state)
            results: list[tuple[Candidate, ModelState, StageContext]] = []
            for route in routes:
                ctx = eng.context(plan.recipe.train_for(spec), work)
                ctx.max_trials = spec.max_trials
                ctx.proven_routes = self.proven_routes
                start = state.copy() if len(routes) > 1 else state
                cand, new_state = self._candidate(pi, si, plan, stage, start, ctx, route)
                eng.candidates.append(cand)
                results.append((cand, new_state, ctx))
                if cand.status != "failed":
                    eng.update_best()
                eng.save()
            done = [r for r in results if r[0].status != "failed"]
            if not done:
                plan.status = "failed"
                eng.save()
                return
            sign = 1.0 if eng.target.higher_is_better else -1.0
            cand, state, ctx = max(done, key=lambda r: (sign * (r[0].metric if r[0].metric is not None else float("-inf")), -r[0].id))
            if cand.status == "time":  # a stage cut short by the budget still gives a measured model
                for c, _, _ in done:
                    c.status = "ok"
                    c.notes.append("Cut short by max_time.")
                eng.update_best()
                plan.status = "time"
                eng.save()
                return
            if state.layer is not None:
                eng.store.save_weights(state.layer, pi, si)
            state.export_dir = None
            plan.done = si + 1
            plan.chosen.append(cand.settings)
            plan.records.append(json.loads(json.dumps(ctx.record, default=str)))
            plan.kept.append(cand.id)
            eng.save()
            shutil.rmtree(work, ignore_errors=True)
            if state.layer is None:  # the kept route's model lives in its candidate directory from now on
                state.path = eng.store.out_dir / cand.model_dir
        plan.status = "done"
        eng.save()
