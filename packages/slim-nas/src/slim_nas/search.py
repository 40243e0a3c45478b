"""``search``: run a search strategy over a space, trials kept in Optuna storage.

Example:
    >>> from slim_nas import SearchSpace, Choice, IntRange, search
    >>> space = SearchSpace({"kernel": Choice([3, 5, 7]), "depth": IntRange(1, 6)})
    >>> result = search(lambda c: -abs(c["depth"] - 4) - abs(c["kernel"] - 5), space,
    ...                 strategy="random", n_trials=40, seed=0)   # doctest: +SKIP
    >>> result.best                                                  # doctest: +SKIP
    {'kernel': 5, 'depth': 4}
"""

from __future__ import annotations

import copy
import math
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slim_core import ConfigError, check_choice, progress
from slim_nas.constraints import Constraint, as_constraints
from slim_nas.errors import InfeasibleConstraintError, StorageError, require_optuna
from slim_nas.space import SearchSpace
from slim_nas.strategies import STRATEGIES, Strategy, TrialRecord, config_key, records_from_optuna

__all__ = ["search", "SearchResult", "pareto_front", "plot_pareto", "open_storage"]

Objective = Callable[[dict[str, Any]], Any]
# trials that count towards n_trials: interrupted or stale trials do not (they are run again on resume)
_ERROR_ATTR = "slim_error"
_DUPLICATE_ATTR = "slim_duplicate"  # a trial given up because a concurrent worker claimed the same config
_SURPLUS_ATTR = "slim_surplus"  # a trial given up because the study already held n_trials when it was asked
_WORKER_ATTR = "slim_worker"  # who runs a trial: host, boot id, pid, process start (to find dead workers)
_STALE_ATTR = "slim_stale"  # why a running trial was failed (its worker died); its config was queued again
_RERUN_ATTR = "slim_rerun_of"  # the number of the stale trial whose config this trial runs again
_GIVEN_UP = (_DUPLICATE_ATTR, _SURPLUS_ATTR)
# table creation by several workers at once on a new database: the losers see these and retry
_CREATION_RACE = ("already exists", "duplicate key", "unique constraint", "uniqueviolation", "database is locked")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_start(pid: int) -> str | None:
    """Start time of process ``pid`` (Linux), or None; 'Z' for a zombie (a killed, unreaped child)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[-1].split()
    return "Z" if fields and fields[0] in ("Z", "X") else (fields[19] if len(fields) > 19 else None)


def _this_worker() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid, "start": _proc_start(pid)}


def _worker_dead(worker: Any) -> bool:
    """Whether the worker recorded on a trial is a process of this machine that no longer runs.

    Workers on other machines are never judged here (their heartbeats are).
    """
    me = _this_worker()
    if not isinstance(worker, dict) or worker.get("host") != me["host"] or worker.get("boot") != me["boot"]:
        return False
    pid = worker.get("pid")
    if not isinstance(pid, int):
        return False
    if pid == me["pid"]:
        return worker.get("start") != me["start"]  # our pid, reused from a dead process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        pass
    start = _proc_start(pid)
    return start == "Z" or (worker.get("start") is not None and start is not None and start != worker.get("start"))


def _requeue(study: Any, trial: Any) -> None:
    """Queue the config of a trial whose worker died, so the study still ends with n_trials finished."""
    study.enqueue_trial(dict(trial.params), user_attrs={_RERUN_ATTR: trial.number}, skip_if_exists=False)


@dataclass
class SearchResult:
    """What a search found.

    Attributes:
        best: the chosen config (best first objective among feasible completed trials).
        best_values: its objective values.
        trials: every trial of the study, earlier runs and other workers included.
        pareto: the completed, feasible, non-dominated trials (one trial for a single objective).
        directions: ``"maximize"`` / ``"minimize"`` per objective.
        study: the Optuna study (None when searched without Optuna).
    """

    best: dict[str, Any]
    best_values: tuple[float, ...]
    trials: list[TrialRecord]
    pareto: list[TrialRecord]
    directions: list[str]
    study: Any = field(default=None, repr=False)

    @property
    def best_trial(self) -> TrialRecord:
        signs = _signs(self.directions)
        done = [t for t in self.trials if t.state == "complete"]
        return max(done, key=lambda t: signs[0] * t.values[0])

    def plot_pareto(self, path: str | os.PathLike[str], *, x: int = 1, y: int = 0, labels: Sequence[str] | None = None) -> Path:
        """Plot objective ``y`` against objective ``x`` with the Pareto front (needs matplotlib)."""
        return plot_pareto(self, path, x=x, y=y, labels=labels)


def _signs(directions: Sequence[str]) -> list[float]:
    return [1.0 if d == "maximize" else -1.0 for d in directions]


def pareto_front(trials: Sequence[TrialRecord], directions: Sequence[str]) -> list[TrialRecord]:
    """The completed trials no other completed trial dominates, sorted by the first objective (best first)."""
    signs = _signs(directions)
    done = [t for t in trials if t.state == "complete" and t.values is not None]
    pts = [[s * v for s, v in zip(signs, t.values)] for t in done]
    front = []
    for i, t in enumerate(done):
        dominated = any(
            all(b >= a for a, b in zip(pts[i], pts[j])) and any(b > a for a, b in zip(pts[i], pts[j])) for j in range(len(done)) if j != i
        )
        if not dominated:
            front.append(t)
    # one representative per distinct objective vector
    uniq: dict[tuple, TrialRecord] = {}
    for t in front:
        uniq.setdefault(tuple(t.values), t)
    return sorted(uniq.values(), key=lambda t: -signs[0] * t.values[0])


def open_storage(storage: Any, *, heartbeat_interval: int | None = None) -> Any:
    """Open an Optuna storage from a URL (``sqlite:///path.db``, ``postgresql://...``) or pass a storage through.

    Raises:
        StorageError: the URL cannot be opened (names the URL and the reason).
    """
    optuna = require_optuna("a storage URL")
    if storage is None:
        return optuna.storages.InMemoryStorage()
    if not isinstance(storage, str):
        return storage
    if "://" not in storage:
        raise StorageError(f"storage {storage!r} is not a database URL; use e.g. 'sqlite:///search.db' or 'postgresql://user@host/db'")
    if storage.startswith("sqlite:///"):
        path = Path(storage[len("sqlite:///") :])
        if str(path) not in ("", ":memory:") and not path.parent.is_dir():
            raise StorageError(f"cannot open storage {storage!r}: directory {path.parent} does not exist")
    kwargs: dict[str, Any] = {}
    if storage.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if heartbeat_interval:
        kwargs.update(
            heartbeat_interval=heartbeat_interval,
            grace_period=max(3 * heartbeat_interval, 30),
            heartbeat_stale_trial_callback=_requeue,
        )
    for attempt in range(8):
        try:
            return optuna.storages.RDBStorage(storage, **kwargs)
        except Exception as exc:  # sqlalchemy raises many types: missing driver, bad URL, refused connection
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if attempt < 7 and any(m in reason.lower() for m in _CREATION_RACE):
                # another worker is creating the tables of a new database right now: they exist in a moment
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
                continue
            raise StorageError(f"cannot open storage {storage!r}: {reason}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _check_objective_values(raw: Any, n: int) -> tuple[float, ...]:
    vals = tuple(raw) if isinstance(raw, (tuple, list)) else (raw,)
    if len(vals) != n:
        raise ConfigError(f"the objective returned {len(vals)} value(s) but {n} direction(s) were given")
    try:
        return tuple(float(v) for v in vals)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the objective must return numbers, got {raw!r}") from exc


class _ConstraintEval:
    """Evaluates (and caches) constraint values per config."""

    def __init__(self, constraints: list[Constraint]) -> None:
        self.constraints = constraints
        self.cache: dict[tuple, dict[str, float]] = {}

    def values(self, config: dict[str, Any]) -> dict[str, float]:
        key = config_key(config)
        if key not in self.cache:
            self.cache[key] = {c.name: c.value(config) for c in self.constraints}
        return self.cache[key]

    def feasible(self, config: dict[str, Any]) -> bool:
        vals = self.values(config)
        return all(vals[c.name] <= c.max for c in self.constraints)

    def precheck(self, space: SearchSpace, seed: int | None, n_samples: int = 16) -> None:
        """Fail early when no architecture meets the constraints, reporting the closest value found."""
        if not self.constraints:
            return
        import numpy as np

        rng = np.random.default_rng(seed)
        cands = [space.smallest()]
        if space.size <= 64:
            cands += list(space.grid())
        else:
            cands += [space.sample(rng) for _ in range(n_samples)]
        best: dict[str, tuple[float, dict]] = {}
        for cand in cands:
            if self.feasible(cand):
                return
            for c in self.constraints:
                v = self.values(cand)[c.name]
                if c.name not in best or v < best[c.name][0]:
                    best[c.name] = (v, cand)
        parts = []
        for c in self.constraints:
            v, cand = best[c.name]
            if v > c.max:
                parts.append(f"{c.name} <= {c.max:g} cannot be met: the closest achievable value found is {v:g} (config {cand})")
        if not parts:
            parts.append(
                "no single architecture meets all constraints together: " + ", ".join(f"{c.name} <= {c.max:g}" for c in self.constraints)
            )
        raise InfeasibleConstraintError("; ".join(parts))


def _optuna_available() -> bool:
    try:
        import optuna  # noqa: F401
    except ImportError:
        return False
    return True


def search(
    objective: Objective,
    space: SearchSpace | dict,
    strategy: str | Strategy = "sa",
    n_trials: int = 50,
    *,
    storage: Any = None,
    study_name: str | None = None,
    directions: str | Sequence[str] = "maximize",
    constraints: Any = None,
    seed: int | None = None,
    strategy_options: dict[str, Any] | None = None,
    heartbeat_interval: int | None = 10,
) -> SearchResult:
    """Search ``space`` for configs that optimize ``objective``.

    ``n_trials`` is the number of finished trials the study should hold: a search
    re-run on the same storage and study name resumes (an interrupted trial is run
    again), and several processes given the same storage and study name share the
    work without evaluating a config twice.

    Args:
        objective: ``config -> float`` or a tuple of floats (one per direction).
        space: a :class:`SearchSpace` (or a dict of domains).
        strategy: ``"sa"``, ``"random"``, ``"tpe"``, ``"nsga2"`` (the last two need the
            ``optuna`` extra), a registered name, or a :class:`Strategy` instance.
        n_trials: number of finished trials the study should hold after this call.
        storage: None (in memory), an Optuna storage URL (``"sqlite:///search.db"``,
            ``"postgresql://..."``) or an Optuna storage object.
        study_name: name of the study in the storage (needed to resume or share).
        directions: ``"maximize"``/``"minimize"`` or one per objective.
        constraints: :class:`Constraint` s (see :func:`max_flops`, :func:`max_latency`) or
            ``{name: (fn, max)}``; configs violating them are not evaluated.
        seed: seed of the strategy.
        strategy_options: extra options of the strategy (SA temperature, NSGA-II population).
        heartbeat_interval: seconds between heartbeats of a running trial in a database
            storage; a trial whose worker died is then failed and run again.

    Returns:
        A :class:`SearchResult` with ``.best``, ``.trials`` and ``.pareto``.

    Raises:
        ConfigError: unknown strategy, bad directions, SA on several objectives, a space
            that does not match an existing study.
        InfeasibleConstraintError: no architecture can meet a constraint (closest value given).
        StorageError: the storage cannot be opened.
        MissingExtraError: TPE/NSGA-II or a storage URL without Optuna installed.

    Example:
        >>> space = SearchSpace({"x": IntRange(0, 20)})                               # doctest: +SKIP
        >>> search(lambda c: -(c["x"] - 7) ** 2, space, "sa", n_trials=30).best      # doctest: +SKIP
        {'x': 7}
    """
    space = space if isinstance(space, SearchSpace) else SearchSpace(space)
    if not callable(objective):
        raise ConfigError(f"objective must be callable, got {type(objective).__name__}")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"n_trials must be a positive integer, got {n_trials!r}")
    dirs = [directions] if isinstance(directions, str) else list(directions)
    if not dirs:
        raise ConfigError("directions is empty: give 'maximize' or 'minimize' per objective")
    for i, d in enumerate(dirs):
        check_choice(f"directions[{i}]", d, ["maximize", "minimize"])
    if isinstance(strategy, Strategy):
        strat = strategy
    else:
        strat = STRATEGIES.get(strategy)(seed=seed, **(strategy_options or {}))
    if len(dirs) > 1 and not strat.multi_objective:
        raise ConfigError(f"strategy {strategy!r} optimizes one objective; use 'nsga2', 'tpe' or 'random' for {len(dirs)} objectives")
    cons = _ConstraintEval(as_constraints(constraints))
    cons.precheck(space, seed)
    use_optuna = strat.needs_optuna or storage is not None or _optuna_available()
    if use_optuna:
        backend: _Backend = _OptunaBackend(space, strat, dirs, cons, storage, study_name, heartbeat_interval)
    else:
        backend = _MemoryBackend(space, strat, dirs, cons)
    signs = _signs(dirs)

    bar = progress(range(n_trials), desc="search", total=n_trials)
    bar_iter = iter(bar)
    while True:
        backend.reap()  # trials of dead workers are failed and their configs queued again
        trials = backend.trials()
        if _finished(trials) >= n_trials:
            break
        if _finished(trials) + sum(t.state == "running" for t in trials) >= n_trials:
            # the rest of the budget is running in other workers: wait for them, so that a worker dying
            # now still leaves n_trials finished (its trial is failed and queued again by reap())
            if not backend.wait_for_others():
                break
            continue
        handle, config = backend.ask()
        if backend.surplus(handle, n_trials):
            continue  # another worker asked first for the last place in the budget
        next(bar_iter, None)
        try:
            if cons.constraints and not cons.feasible(config):
                backend.tell(handle, None, "pruned", {"constraints": cons.values(config)})
                continue
            with backend.heartbeat(handle):
                raw = objective(dict(config))
            values = _check_objective_values(raw, len(dirs))
        except BaseException:
            backend.tell(handle, None, "fail", {})
            raise
        attrs = {"constraints": cons.values(config)} if cons.constraints else {}
        if not all(math.isfinite(v) for v in values):
            backend.tell(handle, None, "fail", {**attrs, _ERROR_ATTR: f"objective returned {values}"})
            continue
        backend.tell(handle, values, "complete", attrs)
    if hasattr(bar, "close"):
        bar.close()

    trials = backend.trials()
    done = [t for t in trials if t.state == "complete"]
    if not done:
        raise ConfigError(f"no trial of study {study_name!r} completed: every config failed or violated the constraints")
    front = pareto_front(trials, dirs)
    chosen = front[0] if len(dirs) > 1 else max(done, key=lambda t: signs[0] * t.values[0])
    return SearchResult(dict(chosen.config), chosen.values, trials, front if len(dirs) > 1 else [chosen], dirs, backend.study)


def _finished(trials: Sequence[TrialRecord]) -> int:
    """Trials that count as done: complete, pruned by constraints, or failed by a non-finite objective."""
    return sum(1 for t in trials if t.state in ("complete", "pruned") or (t.state == "fail" and _ERROR_ATTR in t.attrs))


class _Backend:
    study: Any = None

    def reap(self) -> None:
        """Fail the running trials of dead workers and queue their configs again."""

    def wait_for_others(self) -> bool:
        """Wait a moment for running trials of other workers; False when there is nothing to wait for."""
        return False

    def surplus(self, handle: Any, n_trials: int) -> bool:
        """Give ``handle`` up (True) when ``n_trials`` trials were already finished or running before it."""
        return False

    def trials(self) -> list[TrialRecord]:
        raise NotImplementedError

    def ask(self) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def tell(self, handle: Any, values: tuple[float, ...] | None, state: str, attrs: dict[str, Any]) -> None:
        raise NotImplementedError

    def heartbeat(self, handle: Any) -> Any:
        import contextlib

        return contextlib.nullcontext()


class _MemoryBackend(_Backend):
    """Trials kept in a list: SA and random search without Optuna."""

    def __init__(self, space: SearchSpace, strat: Strategy, dirs: list[str], cons: _ConstraintEval) -> None:
        self.space, self.strat, self.signs, self.cons = space, strat, _signs(dirs), cons
        self._trials: list[TrialRecord] = []

    def trials(self) -> list[TrialRecord]:
        return list(self._trials)

    def ask(self) -> tuple[Any, dict[str, Any]]:
        feasible = self.cons.feasible if self.cons.constraints else None
        config = self.strat.propose(self.space, self._trials, len(self._trials), self.signs, feasible)
        rec = TrialRecord(len(self._trials), dict(config), None, "running")
        self._trials.append(rec)
        return rec, config

    def tell(self, handle: TrialRecord, values, state, attrs) -> None:
        handle.values, handle.state = values, state
        handle.attrs.update(attrs)


class _OptunaBackend(_Backend):
    """Trials in an Optuna study (in memory or a database shared by workers)."""

    def __init__(self, space, strat, dirs, cons, storage, study_name, heartbeat_interval) -> None:
        optuna = require_optuna(f"strategy {type(strat).__name__}" if storage is None else "a storage URL")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # heartbeats with ask/tell are what we want (Optuna warns they are experimental / meant for optimize())
        for category in (optuna.exceptions.ExperimentalWarning, UserWarning):
            warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*", category=category)
        warnings.filterwarnings("ignore", message=".*fail_stale_trials.*", category=optuna.exceptions.ExperimentalWarning)
        self.optuna, self.space, self.strat = optuna, space, strat
        is_db = isinstance(storage, str)
        self.storage = open_storage(storage, heartbeat_interval=heartbeat_interval if is_db else None)
        feasible = cons.feasible if cons.constraints else None
        sampler = strat.optuna_sampler(space, _signs(dirs), feasible)
        try:
            self.study = optuna.create_study(
                storage=self.storage, sampler=sampler, study_name=study_name, directions=dirs, load_if_exists=True
            )
        except Exception as exc:
            raise StorageError(f"cannot open study {study_name!r} in storage {storage!r}: {exc}") from exc
        old_dirs = [d.name.lower() for d in self.study.directions]
        if old_dirs != dirs:
            raise ConfigError(f"study {study_name!r} exists with directions {old_dirs}, not {dirs}")
        saved = self.study.user_attrs.get("slim_space")
        if saved is None:
            self.study.set_user_attr("slim_space", space.to_dict())
        elif SearchSpace.from_dict(saved) != space:
            raise ConfigError(f"study {study_name!r} was created with another search space ({saved}); use a new study_name")
        self.distributions = space.to_optuna()
        self.hb_interval = heartbeat_interval if is_db and heartbeat_interval else None
        existing = len(self.study.get_trials(deepcopy=False))
        if existing and strat.needs_optuna and strat.seed is not None:
            # Optuna's samplers draw from one seeded stream: resumed with the same seed, TPE's startup
            # trials would propose the configs of the first run again. Continue on a stream of its own.
            resumed = copy.copy(strat)
            resumed.seed = (int(strat.seed) * 1_000_003 + existing) & 0x7FFFFFFF
            self.study.sampler = resumed.optuna_sampler(space, _signs(dirs), feasible)

    def trials(self) -> list[TrialRecord]:
        return [t for t in records_from_optuna(self.study.get_trials(deepcopy=False)) if not any(a in t.attrs for a in _GIVEN_UP)]

    def reap(self) -> None:
        TS = self.optuna.trial.TrialState
        if self.hb_interval:
            self.optuna.storages.fail_stale_trials(self.study)  # workers on any machine, by heartbeat age
        for t in self.study.get_trials(deepcopy=False, states=(TS.RUNNING,)):
            if not _worker_dead(t.user_attrs.get(_WORKER_ATTR)):
                continue
            try:  # only one worker wins the state update, so the config is queued once
                self.storage.set_trial_user_attr(t._trial_id, _STALE_ATTR, "its worker process died")
                self.storage.set_trial_state_values(t._trial_id, state=TS.FAIL)
            except self.optuna.exceptions.UpdateFinishedTrialError:
                continue
            _requeue(self.study, t)

    def wait_for_others(self) -> bool:
        me = _this_worker()
        running = [t for t in self.study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
        # a trial of another machine can only be judged by heartbeats; without them, do not wait on it forever
        judgeable = [t for t in running if self.hb_interval or (t.user_attrs.get(_WORKER_ATTR) or {}).get("host") == me["host"]]
        if not judgeable:
            return False
        time.sleep(min(1.0, float(self.hb_interval or 1)))
        return True

    def surplus(self, handle: Any, n_trials: int) -> bool:
        earlier = [t for t in self.trials() if t.number < handle.number]
        if _finished(earlier) + sum(t.state == "running" for t in earlier) < n_trials:
            return False
        handle.set_user_attr(_SURPLUS_ATTR, True)
        self.study.tell(handle, state=self.optuna.trial.TrialState.FAIL)
        if _RERUN_ATTR in handle.user_attrs:  # a queued config must stay queued for whoever takes the free place
            self.study.enqueue_trial(dict(handle.params), user_attrs={_RERUN_ATTR: handle.user_attrs[_RERUN_ATTR]})
        return True

    def _claim(self, trial: Any) -> None:
        trial.set_user_attr(_WORKER_ATTR, _this_worker())
        if self.hb_interval:
            self.storage.record_heartbeat(trial._trial_id)

    def ask(self) -> tuple[Any, dict[str, Any]]:
        for attempt in range(20):
            if attempt == 10:
                self._queue_unseen(
                    len(self.study.get_trials(deepcopy=False))
                )  # the sampler keeps proposing tried configs (a converged TPE)
            trial = self.study.ask()
            self._claim(trial)
            config = {name: _suggest(trial, name, dist) for name, dist in self.distributions.items()}
            if attempt == 19 or not (self.strat.avoids_duplicates and self._claimed_elsewhere(trial, config)):
                return trial, config
            # another worker (or an earlier run) has this config: give it up (not counted) and ask again
            trial.set_user_attr(_DUPLICATE_ATTR, True)
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        raise AssertionError("unreachable")  # pragma: no cover

    def _queue_unseen(self, number: int) -> None:
        import numpy as np

        seen = {config_key(t.config) for t in self.trials()}
        rng = np.random.default_rng([number, 7])
        for _ in range(100):
            cand = self.space.sample(rng)
            if config_key(cand) not in seen:
                self.study.enqueue_trial(cand)
                return

    def _claimed_elsewhere(self, trial: Any, config: dict[str, Any]) -> bool:
        """Whether another live trial holds ``config``. Our params are stored before this check, so of two
        workers racing on one config at least the later checker sees the other: never both keep it."""
        records = records_from_optuna(self.study.get_trials(deepcopy=False))
        live = [t for t in records if _DUPLICATE_ATTR not in t.attrs and (t.state != "fail" or _ERROR_ATTR in t.attrs)]
        if len({config_key(t.config) for t in live}) >= self.space.size:
            return False  # every config has been tried: repeating one is unavoidable
        return any(t.number != trial.number and t.config == config for t in live)

    def tell(self, handle, values, state, attrs) -> None:
        for k, v in attrs.items():
            handle.set_user_attr(k, v)
        TS = self.optuna.trial.TrialState
        if state == "complete":
            self.study.tell(handle, list(values))
        else:
            self.study.tell(handle, state=TS.PRUNED if state == "pruned" else TS.FAIL)

    def heartbeat(self, handle: Any) -> Any:
        import contextlib

        if not self.hb_interval:
            return contextlib.nullcontext()
        return _Heartbeat(self.storage, handle._trial_id, self.hb_interval)


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    kind = type(dist).__name__
    if kind == "CategoricalDistribution":
        return trial.suggest_categorical(name, dist.choices)
    if kind == "IntDistribution":
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, log=dist.log)


class _Heartbeat:
    """Records heartbeats of a running trial in a thread, so a dead worker's trial is detected as stale."""

    def __init__(self, storage: Any, trial_id: int, interval: int) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.storage.record_heartbeat(self.trial_id)

    def __enter__(self) -> _Heartbeat:
        self.storage.record_heartbeat(self.trial_id)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def plot_pareto(result: SearchResult, path: str | os.PathLike[str], *, x: int = 1, y: int = 0, labels: Sequence[str] | None = None) -> Path:
    """Scatter all completed trials (objective ``x`` vs ``y``), highlight the Pareto front and the chosen one.

    Needs matplotlib (``pip install 'slim-nas[plot]'``); the image is written atomically.
    """
    from slim_core.extras import require

    matplotlib = require("matplotlib", package="slim-nas", extra="plot", what="plot_pareto")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slim_core import atomic_write

    n = len(result.directions)
    if not (0 <= x < n and 0 <= y < n) or n < 2:
        raise ConfigError(f"plot_pareto needs two objectives and indices below {n}, got x={x}, y={y}")
    names = list(labels) if labels else [f"objective {i}" for i in range(n)]
    done = [t for t in result.trials if t.state == "complete"]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([t.values[x] for t in done], [t.values[y] for t in done], s=12, c="0.6", label="trials")
    front = sorted(result.pareto, key=lambda t: t.values[x])
    ax.plot([t.values[x] for t in front], [t.values[y] for t in front], "o-", c="C0", label="Pareto front")
    ax.scatter([result.best_values[x]], [result.best_values[y]], s=80, marker="*", c="C3", label="chosen", zorder=3)
    ax.set_xlabel(names[x])
    ax.set_ylabel(names[y])
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    with atomic_write(out, "wb") as fh:
        fig.savefig(fh, format=out.suffix.lstrip(".") or "png")
    plt.close(fig)
    return out
