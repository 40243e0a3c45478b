"""Declarative, serializable search spaces.

A :class:`SearchSpace` maps parameter names to domains: :class:`Choice` (a list
of scalar values), :class:`IntRange` (integers with a step) and
:class:`FloatRange` (a float interval, optionally log-scaled). A space samples
configs (plain dicts), proposes neighbours for simulated annealing, turns
itself into Optuna distributions and round-trips through dicts and YAML.

Example:
    >>> space = SearchSpace({"width": Choice([0.5, 0.75, 1.0]), "kernel": Choice([3, 5, 7]), "depth": IntRange(2, 4)})
    >>> space.size
    27
    >>> SearchSpace.from_dict(space.to_dict()) == space
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from slim_core import ConfigError, dump_yaml, load_yaml

__all__ = ["Domain", "Choice", "IntRange", "FloatRange", "SearchSpace", "DOMAIN_TYPES"]

_SCALARS = (bool, int, float, str, type(None))


class Domain:
    """Base of the value domains of one search-space parameter."""

    kind: str = ""

    def sample(self, rng: np.random.Generator) -> Any:
        raise NotImplementedError

    def neighbor(self, value: Any, rng: np.random.Generator) -> Any:
        """A value near ``value`` (a different one when the domain has several)."""
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        raise NotImplementedError

    def minimum(self) -> Any:
        """The smallest value (the first choice for non-numeric choices)."""
        raise NotImplementedError

    def maximum(self) -> Any:
        raise NotImplementedError

    def values(self) -> list[Any] | None:
        """All values of a finite domain, None for a continuous one."""
        return None

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_optuna(self) -> Any:
        raise NotImplementedError


def _ordered_step(values: list[Any], value: Any, rng: np.random.Generator) -> Any:
    """Move one or two positions along ``values`` (or jump anywhere with probability 0.3)."""
    if len(values) == 1:
        return values[0]
    idx = values.index(value) if value in values else int(rng.integers(len(values)))
    if rng.random() < 0.3:
        choices = [v for i, v in enumerate(values) if i != idx]
        return choices[int(rng.integers(len(choices)))]
    step = int(rng.choice([-2, -1, 1, 2]))
    new = min(max(idx + step, 0), len(values) - 1)
    if new == idx:
        new = idx - 1 if idx > 0 else idx + 1
    return values[new]


@dataclass(frozen=True)
class Choice(Domain):
    """One of a list of scalar values (numbers, strings, booleans).

    Args:
        choices: the candidate values; at least one, no duplicates.
    """

    choices: tuple[Any, ...]
    kind = "choice"

    def __init__(self, choices: Any) -> None:
        if isinstance(choices, (str, bytes)) or not hasattr(choices, "__iter__"):
            raise ConfigError(f"Choice needs a list of values, got {type(choices).__name__} {choices!r}")
        vals = tuple(c.item() if isinstance(c, np.generic) else c for c in choices)
        if not vals:
            raise ConfigError("Choice([]) is empty: give at least one value")
        bad = [v for v in vals if not isinstance(v, _SCALARS)]
        if bad:
            raise ConfigError(f"Choice values must be scalars (number, string, bool, None); got {type(bad[0]).__name__} {bad[0]!r}")
        dup = sorted({repr(v) for v in vals if vals.count(v) > 1})
        if dup:
            raise ConfigError(f"Choice has duplicate values: {', '.join(dup)}")
        object.__setattr__(self, "choices", vals)

    def _numeric(self) -> bool:
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.choices)

    def sample(self, rng: np.random.Generator) -> Any:
        return self.choices[int(rng.integers(len(self.choices)))]

    def neighbor(self, value: Any, rng: np.random.Generator) -> Any:
        if self._numeric():
            return _ordered_step(sorted(self.choices), value, rng)
        others = [c for c in self.choices if c != value] or list(self.choices)
        return others[int(rng.integers(len(others)))]

    def contains(self, value: Any) -> bool:
        return value in self.choices

    def minimum(self) -> Any:
        return min(self.choices) if self._numeric() else self.choices[0]

    def maximum(self) -> Any:
        return max(self.choices) if self._numeric() else self.choices[-1]

    def values(self) -> list[Any]:
        return list(self.choices)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "choice", "choices": list(self.choices)}

    def to_optuna(self) -> Any:
        import optuna

        return optuna.distributions.CategoricalDistribution(list(self.choices))


@dataclass(frozen=True)
class IntRange(Domain):
    """Integers ``low, low + step, ..., high`` (both ends included)."""

    low: int
    high: int
    step: int = 1
    kind = "int"

    def __post_init__(self) -> None:
        for name in ("low", "high", "step"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ConfigError(f"IntRange.{name} must be an integer, got {type(v).__name__} {v!r}")
            object.__setattr__(self, name, int(v))
        if self.step < 1:
            raise ConfigError(f"IntRange step={self.step} must be >= 1")
        if self.low > self.high:
            raise ConfigError(f"IntRange({self.low}, {self.high}) is contradictory: low > high")
        if (self.high - self.low) % self.step:
            raise ConfigError(f"IntRange({self.low}, {self.high}, step={self.step}): high - low is not a multiple of step")

    @property
    def count(self) -> int:
        return (self.high - self.low) // self.step + 1

    def sample(self, rng: np.random.Generator) -> int:
        return self.low + self.step * int(rng.integers(self.count))

    def neighbor(self, value: Any, rng: np.random.Generator) -> int:
        if self.count == 1:
            return self.low
        idx = (int(value) - self.low) // self.step
        if rng.random() < 0.3:  # jump to any other value
            other = int(rng.integers(self.count - 1))
            return self.low + self.step * (other + (other >= idx))
        radius = max(1, self.count // 10)
        delta = int(rng.integers(1, radius + 1)) * int(rng.choice([-1, 1]))
        new = min(max(idx + delta, 0), self.count - 1)
        if new == idx:
            new = idx - delta if 0 <= idx - delta < self.count else (idx + 1 if idx + 1 < self.count else idx - 1)
        return self.low + self.step * new

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, np.integer)) and self.low <= value <= self.high and (value - self.low) % self.step == 0

    def minimum(self) -> int:
        return self.low

    def maximum(self) -> int:
        return self.high

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "int", "low": self.low, "high": self.high, "step": self.step}

    def to_optuna(self) -> Any:
        import optuna

        return optuna.distributions.IntDistribution(self.low, self.high, step=self.step)


@dataclass(frozen=True)
class FloatRange(Domain):
    """Floats in ``[low, high]``, sampled uniformly or on a log scale."""

    low: float
    high: float
    log: bool = False
    kind = "float"

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v):
                raise ConfigError(f"FloatRange.{name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.low > self.high:
            raise ConfigError(f"FloatRange({self.low}, {self.high}) is contradictory: low > high")
        if self.log and self.low <= 0:
            raise ConfigError(f"FloatRange(log=True) needs low > 0, got {self.low}")

    def _to_unit(self, v: float) -> float:
        if self.high == self.low:
            return 0.0
        if self.log:
            return (math.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (v - self.low) / (self.high - self.low)

    def _from_unit(self, u: float) -> float:
        u = min(max(u, 0.0), 1.0)
        if self.log:
            return float(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))
        return float(self.low + u * (self.high - self.low))

    def sample(self, rng: np.random.Generator) -> float:
        return self._from_unit(float(rng.random()))

    def neighbor(self, value: Any, rng: np.random.Generator) -> float:
        if rng.random() < 0.3:
            return self.sample(rng)
        return self._from_unit(self._to_unit(float(value)) + float(rng.normal(0.0, 0.1)))

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def minimum(self) -> float:
        return self.low

    def maximum(self) -> float:
        return self.high

    def to_dict(self) -> dict[str, Any]:
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}

    def to_optuna(self) -> Any:
        import optuna

        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)


DOMAIN_TYPES: dict[str, type[Domain]] = {"choice": Choice, "int": IntRange, "float": FloatRange}


def _domain_from_dict(name: str, data: Any) -> Domain:
    if isinstance(data, Domain):
        return data
    if isinstance(data, (list, tuple)):
        return Choice(data)
    if not isinstance(data, Mapping) or "type" not in data:
        raise ConfigError(f"search space entry {name!r}: expected a mapping with a 'type' key ({', '.join(DOMAIN_TYPES)}), got {data!r}")
    kind = data["type"]
    if kind not in DOMAIN_TYPES:
        raise ConfigError(f"search space entry {name!r}: unknown type {kind!r}; known: {', '.join(DOMAIN_TYPES)}")
    kwargs = {k: v for k, v in data.items() if k != "type"}
    try:
        return DOMAIN_TYPES[kind](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"search space entry {name!r}: {exc}") from exc


class SearchSpace:
    """A named set of domains; configs are plain ``{name: value}`` dicts.

    Args:
        domains: ``{name: Choice | IntRange | FloatRange}`` (a list is read as a Choice);
            at least one entry.

    Raises:
        ConfigError: the space is empty, a name is not a string, or a domain is
            contradictory (``IntRange(4, 2)``, ``Choice([])``).

    Example:
        >>> space = SearchSpace({"kernel": Choice([3, 5]), "depth": IntRange(1, 3)})
        >>> sorted(space.sample(seed=0))
        ['depth', 'kernel']
    """

    def __init__(self, domains: Mapping[str, Any]) -> None:
        if not isinstance(domains, Mapping):
            raise ConfigError(f"SearchSpace needs a mapping of name -> domain, got {type(domains).__name__}")
        if not domains:
            raise ConfigError("the search space is empty: give at least one parameter, e.g. SearchSpace({'width': Choice([0.5, 1.0])})")
        self.domains: dict[str, Domain] = {}
        for name, dom in domains.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"search space names must be non-empty strings, got {name!r}")
            self.domains[name] = _domain_from_dict(name, dom)

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.domains)

    def __iter__(self) -> Iterator[str]:
        return iter(self.domains)

    def __getitem__(self, name: str) -> Domain:
        return self.domains[name]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.domains == other.domains

    def __repr__(self) -> str:
        return f"SearchSpace({self.domains!r})"

    @property
    def names(self) -> list[str]:
        return list(self.domains)

    @property
    def size(self) -> float:
        """Number of distinct configs (``inf`` when a FloatRange is present)."""
        total = 1
        for dom in self.domains.values():
            vals = dom.values()
            if vals is None:
                return math.inf
            total *= len(vals)
        return total

    def grid(self) -> Iterator[dict[str, Any]]:
        """Every config of a finite space (raises ConfigError on a continuous one)."""
        import itertools

        lists = []
        for name, dom in self.domains.items():
            vals = dom.values()
            if vals is None:
                raise ConfigError(f"parameter {name!r} is continuous; the space has no finite grid")
            lists.append(vals)
        for combo in itertools.product(*lists):
            yield dict(zip(self.domains, combo))

    # ------------------------------------------------------------------ configs
    def check(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``config`` as a dict after checking it has every name with an allowed value."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"a config must be a mapping, got {type(config).__name__}")
        missing = [n for n in self.domains if n not in config]
        extra = [n for n in config if n not in self.domains]
        if missing or extra:
            parts = ([f"missing {missing}"] if missing else []) + ([f"unknown {extra}"] if extra else [])
            raise ConfigError(f"config does not match the search space: {'; '.join(parts)} (names: {self.names})")
        for name, dom in self.domains.items():
            if not dom.contains(config[name]):
                raise ConfigError(f"config value {name}={config[name]!r} is outside its domain {dom.to_dict()}")
        return {n: config[n] for n in self.domains}

    def sample(self, rng: np.random.Generator | None = None, *, seed: int | None = None) -> dict[str, Any]:
        """A uniformly random config."""
        rng = rng if rng is not None else np.random.default_rng(seed)
        return {name: dom.sample(rng) for name, dom in self.domains.items()}

    def neighbor(self, config: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Change one randomly chosen parameter (the SANAS move); two with probability 0.2."""
        new = dict(config)
        names = [n for n, d in self.domains.items() if d.values() is None or len(d.values()) > 1] or self.names
        n_change = 2 if len(names) > 1 and rng.random() < 0.2 else 1
        for idx in rng.choice(len(names), size=n_change, replace=False):
            name = names[int(idx)]
            new[name] = self.domains[name].neighbor(config[name], rng)
        return new

    def smallest(self) -> dict[str, Any]:
        """Every parameter at its minimum (the cheapest architecture of most spaces)."""
        return {name: dom.minimum() for name, dom in self.domains.items()}

    def largest(self) -> dict[str, Any]:
        """Every parameter at its maximum."""
        return {name: dom.maximum() for name, dom in self.domains.items()}

    def to_optuna(self) -> dict[str, Any]:
        """``{name: optuna distribution}`` (needs the ``optuna`` extra)."""
        return {name: dom.to_optuna() for name, dom in self.domains.items()}

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        return {name: dom.to_dict() for name, dom in self.domains.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        if not isinstance(data, Mapping):
            raise ConfigError(f"a search space must be a mapping, got {type(data).__name__}")
        return cls(data)

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """YAML text; written atomically to ``path`` when given."""
        import yaml

        if path is not None:
            dump_yaml(self.to_dict(), path)
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str]) -> SearchSpace:
        return cls.from_dict(load_yaml(source))
