"""Search strategies: simulated annealing, random, TPE and NSGA-II.

Simulated annealing (the move and acceptance rule of PaddleSlim's SANAS) and
random search are written here as pure functions of the trial history, so they
need no Optuna, and they are also wrapped as Optuna samplers so that every
strategy shares Optuna's storage, resume and multi-process workers. Their state
is rebuilt from the stored trials each time (the acceptance draws come from a
hash of the seed and the trial number), so two workers on one study, or a
resumed search, continue the same chain. TPE and NSGA-II are Optuna's samplers.

Register your own strategy with ``STRATEGIES.register("name")`` on a
:class:`Strategy` subclass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slim_core import ConfigError, Registry
from slim_nas.errors import require_optuna
from slim_nas.space import SearchSpace

__all__ = ["TrialRecord", "Strategy", "SimulatedAnnealing", "RandomSearch", "TPE", "NSGA2", "STRATEGIES", "config_key"]

STRATEGIES = Registry("search strategy")

Feasible = Callable[[dict[str, Any]], bool]


@dataclass
class TrialRecord:
    """One trial of a study, independent of Optuna.

    Attributes:
        number: trial number in the study (unique across workers).
        config: the architecture config.
        values: objective values (None unless ``state == "complete"``).
        state: ``"complete"``, ``"running"``, ``"pruned"`` (violated a constraint) or ``"fail"``.
        attrs: measured constraint values and other notes.
    """

    number: int
    config: dict[str, Any]
    values: tuple[float, ...] | None = None
    state: str = "complete"
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float | None:
        return None if self.values is None else self.values[0]


def config_key(config: dict[str, Any]) -> tuple:
    """A hashable key of a config (for duplicate detection)."""
    return tuple(sorted((k, repr(v)) for k, v in config.items()))


def _rng(seed: int | None, number: int, salt: int = 0) -> np.random.Generator:
    # depends on the trial number, not on process state: workers and resumed runs agree
    return np.random.default_rng([0 if seed is None else int(seed) & 0xFFFFFFFF, int(number), salt])


def _fresh(space: SearchSpace, candidate: dict[str, Any], seen: set, feasible: Feasible | None) -> bool:
    if config_key(candidate) in seen and len(seen) < space.size:
        return False
    return feasible is None or feasible(candidate)


class Strategy:
    """Base class: a strategy proposes the next config from the history (pure) or builds an Optuna sampler."""

    needs_optuna = False
    multi_objective = True
    # proposals skip configs already tried; with several workers the search then also gives up a
    # config that a concurrent worker claimed first, so no config is evaluated twice
    avoids_duplicates = False

    def __init__(self, seed: int | None = None, **options: Any) -> None:
        self.seed = seed
        self.options = options

    def propose(
        self, space: SearchSpace, history: list[TrialRecord], number: int, signs: Sequence[float], feasible: Feasible | None
    ) -> dict[str, Any]:
        """Next config for trial ``number`` (``signs`` is +1 to maximize, -1 to minimize, per objective)."""
        raise NotImplementedError

    def optuna_sampler(self, space: SearchSpace, signs: Sequence[float], feasible: Feasible | None) -> Any:
        """An Optuna sampler; the default wraps :meth:`propose`."""
        return _proposal_sampler_class()(self, space, signs, feasible)


@STRATEGIES.register("random")
class RandomSearch(Strategy):
    """Uniform random configs, avoiding configs already tried and those violating constraints."""

    avoids_duplicates = True

    def propose(self, space, history, number, signs, feasible):
        rng = _rng(self.seed, number)
        seen = {config_key(t.config) for t in history}
        tries = int(self.options.get("max_tries", 100))
        cand = space.sample(rng)
        for _ in range(tries):
            if _fresh(space, cand, seen, feasible):
                return cand
            cand = space.sample(rng)
        return cand


@STRATEGIES.register("sa")
class SimulatedAnnealing(Strategy):
    """Simulated annealing over configs, as in PaddleSlim's SANAS.

    Each proposal changes one parameter of the current config (two with probability
    0.2); a worse result is accepted with probability ``exp(delta / T)`` where
    ``T = init_temperature * reduce_rate ** k`` after ``k`` completed trials.

    Options:
        init_temperature (float, default 1.0), reduce_rate (float, default 0.9),
        init_config (dict, the first config; default random), max_tries (int, 100).
    """

    multi_objective = False
    avoids_duplicates = True

    def __init__(self, seed: int | None = None, **options: Any) -> None:
        super().__init__(seed, **options)
        self.t0 = float(options.get("init_temperature", 1.0))
        self.rate = float(options.get("reduce_rate", 0.9))
        if self.t0 <= 0 or not 0 < self.rate <= 1:
            raise ConfigError(f"SA needs init_temperature > 0 and 0 < reduce_rate <= 1, got {self.t0}, {self.rate}")

    def current(self, history: list[TrialRecord], sign: float) -> tuple[dict[str, Any] | None, int]:
        """Replay the completed trials: the config the chain sits on and the step count."""
        cur, cur_val, k = None, -math.inf, 0
        for t in sorted((t for t in history if t.state == "complete" and t.values), key=lambda t: t.number):
            v = sign * float(t.values[0])
            if cur is None or v >= cur_val:
                cur, cur_val = t.config, v
            else:
                temp = max(self.t0 * self.rate**k, 1e-12)
                if _rng(self.seed, t.number, salt=1).random() < math.exp(max((v - cur_val) / temp, -700.0)):
                    cur, cur_val = t.config, v
            k += 1
        return cur, k

    def propose(self, space, history, number, signs, feasible):
        rng = _rng(self.seed, number)
        seen = {config_key(t.config) for t in history}
        cur, _ = self.current(history, signs[0])
        tries = int(self.options.get("max_tries", 100))
        if cur is None:
            init = self.options.get("init_config")
            if init is not None and not history:
                return space.check(init)
            cand = space.sample(rng)
            for _ in range(tries):
                if _fresh(space, cand, seen, feasible):
                    break
                cand = space.sample(rng)
            return cand
        for i in range(tries):
            # after half the tries without a fresh neighbour, jump: the neighbourhood is used up
            cand = space.neighbor(cur, rng) if i < tries // 2 else space.sample(rng)
            if _fresh(space, cand, seen, feasible):
                return cand
        return cand


@STRATEGIES.register("tpe")
class TPE(Strategy):
    """Optuna's Tree-structured Parzen Estimator (multivariate); options go to ``TPESampler``."""

    needs_optuna = True
    avoids_duplicates = True  # resumed or parallel workers may propose a config already run

    def optuna_sampler(self, space, signs, feasible):
        optuna = require_optuna("strategy 'tpe'")
        opts = {"multivariate": True, "n_startup_trials": 10, **self.options}
        return optuna.samplers.TPESampler(seed=self.seed, **opts)


@STRATEGIES.register("nsga2")
class NSGA2(Strategy):
    """Optuna's NSGA-II for several objectives (accuracy vs latency / FLOPs); options go to ``NSGAIISampler``."""

    needs_optuna = True
    # children equal to a parent are part of how NSGA-II converges; giving them up changes its search

    def optuna_sampler(self, space, signs, feasible):
        optuna = require_optuna("strategy 'nsga2'")
        opts = {"population_size": 20, **self.options}
        return optuna.samplers.NSGAIISampler(seed=self.seed, **opts)


_SAMPLER_CLASS: Any = None


def _proposal_sampler_class() -> Any:
    """Build (once) the Optuna sampler class that wraps a pure :class:`Strategy`."""
    global _SAMPLER_CLASS
    if _SAMPLER_CLASS is not None:
        return _SAMPLER_CLASS
    optuna = require_optuna("an Optuna study")

    class ProposalSampler(optuna.samplers.BaseSampler):
        def __init__(self, strategy: Strategy, space: SearchSpace, signs: Sequence[float], feasible: Feasible | None) -> None:
            self.strategy, self.space, self.signs, self.feasible = strategy, space, list(signs), feasible
            self._fallback = optuna.samplers.RandomSampler(seed=strategy.seed)

        def infer_relative_search_space(self, study, trial):
            return self.space.to_optuna()

        def sample_relative(self, study, trial, search_space):
            if not search_space:
                return {}
            history = records_from_optuna(study.get_trials(deepcopy=False))
            history = [t for t in history if t.number != trial.number]
            return self.strategy.propose(self.space, history, trial.number, self.signs, self.feasible)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    _SAMPLER_CLASS = ProposalSampler
    return ProposalSampler


def records_from_optuna(trials: Sequence[Any]) -> list[TrialRecord]:
    """Turn Optuna FrozenTrials into :class:`TrialRecord` s."""
    out = []
    for t in trials:
        state = t.state.name.lower()
        values = tuple(float(v) for v in t.values) if t.values is not None and state == "complete" else None
        out.append(TrialRecord(t.number, dict(t.params), values, state, dict(t.user_attrs)))
    return out
