"""Typed configuration dataclasses with validation and a YAML round trip.

Every slim config (``PruneConfig``, ``PTQConfig``, ...) is a dataclass that
inherits :class:`SlimConfig`. Field types are checked when the object is built
(``Literal`` fields name the allowed values), nested configs are rebuilt from
dicts, and unknown keys are rejected with the closest valid key.

Example:
    >>> from dataclasses import dataclass
    >>> from typing import Literal
    >>> @dataclass(frozen=True)
    ... class Demo(SlimConfig):
    ...     ratio: float = 0.5
    ...     mode: Literal["a", "b"] = "a"
    ...     def validate(self):
    ...         check_range("ratio", self.ratio, 0.0, 1.0, hi_open=True)
    >>> Demo.from_dict({"ratio": 0.3}).to_dict()
    {'ratio': 0.3, 'mode': 'a'}
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from slim_core.atomic import atomic_write
from slim_core.errors import ConfigError
from slim_core.registry import closest

__all__ = [
    "SlimConfig",
    "check_range",
    "check_choice",
    "load_yaml",
    "dump_yaml",
]

C = TypeVar("C", bound="SlimConfig")
_MISSING = object()


def check_range(
    name: str, value: float | int | None, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> None:
    """Raise ConfigError unless ``lo <= value <= hi`` (bounds open when asked)."""
    if value is None:
        return
    bad = (lo is not None and (value < lo or (lo_open and value == lo))) or (hi is not None and (value > hi or (hi_open and value == hi)))
    if bad or value != value:  # NaN is never in range
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise ConfigError(f"{name}={value!r} is outside {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}")


def check_choice(name: str, value: Any, allowed: typing.Iterable[Any]) -> None:
    """Raise ConfigError unless ``value`` is one of ``allowed``; the message lists them."""
    allowed = list(allowed)
    if value not in allowed:
        hint = closest(str(value), [str(a) for a in allowed])
        did = f" (did you mean {hint!r}?)" if hint else ""
        raise ConfigError(f"{name}={value!r} is not allowed{did}; allowed: {', '.join(repr(a) for a in allowed)}")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert containers/nested configs."""
    if tp is Any or tp is typing.Any:
        return value
    origin = get_origin(tp)
    if origin is Literal:
        check_choice(path, value, get_args(tp))
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: None is not allowed (expected {_type_name(tp)})")
        alternatives = [a for a in args if a is not type(None)]
        if len(alternatives) == 1:  # `X | None`: the error of X is the precise one
            return _convert(value, alternatives[0], path)
        for arg in alternatives:
            try:
                return _convert(value, arg, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {value!r} does not match {_type_name(tp)}")
    if origin in (list, tuple, collections.abc.Sequence):  # get_origin maps typing.List/Tuple/Sequence to these
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            items = [_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return list(items) if origin is list else tuple(items)  # a Sequence field stays hashable
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        args = get_args(tp) or (Any, Any)
        return {_convert(k, args[0], f"{path}.<key>"): _convert(v, args[1], f"{path}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, SlimConfig):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return tp._from_dict(value, path)
        raise ConfigError(f"{path}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        try:
            return tp(value)
        except ValueError:
            check_choice(path, value, [m.value for m in tp])
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise ConfigError(f"{path}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, SlimConfig):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


class SlimConfig:
    """Base of all slim config dataclasses.

    Subclasses are ``@dataclass`` (frozen where possible) and may override
    :meth:`validate` for checks across fields. Types are checked on construction.
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.init:
                continue
            value = getattr(self, f.name)
            converted = _convert(value, hints.get(f.name, Any), f"{type(self).__name__}.{f.name}")
            if converted is not value:
                object.__setattr__(self, f.name, converted)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; raise ConfigError. The default checks nothing."""

    # dict / YAML round trip -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (nested configs become dicts)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}  # type: ignore[arg-type]

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the fields a dict may hold."""
        return [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any] | None) -> C:
        """Build the config from a dict; unknown keys raise ConfigError naming the closest valid key."""
        return cls._from_dict(data or {}, cls.__name__)

    @classmethod
    def _from_dict(cls: type[C], data: dict[str, Any], path: str) -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
        names = cls.field_names()
        for key in data:
            if key not in names:
                hint = closest(str(key), names)
                did = f"; did you mean {hint!r}?" if hint else ""
                raise ConfigError(f"{path}: unknown key {key!r}{did} (valid keys: {', '.join(names)})")
        hints = typing.get_type_hints(cls)
        kwargs = {k: _convert(v, hints.get(k, Any), f"{path}.{k}") for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{path}: {exc}") from exc

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """YAML text of :meth:`to_dict`; also written atomically to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            with atomic_write(path) as fh:
                fh.write(text)
        return text

    @classmethod
    def from_yaml(cls: type[C], source: str | os.PathLike[str]) -> C:
        """Load from a YAML file path or YAML text."""
        return cls.from_dict(load_yaml(source))


def load_yaml(source: str | os.PathLike[str]) -> Any:
    """Parse YAML from a path or a string with the safe loader.

    Raises:
        ConfigError: the file is missing or the YAML is malformed (line and column given).
    """
    text: str
    where = "<string>"
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml", ".json"))):
        p = Path(source)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        text = p.read_text(encoding="utf-8")
        where = str(p)
    else:
        text = str(source)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"malformed YAML in {where}{at}: {problem}") from exc


def dump_yaml(data: Any, path: str | os.PathLike[str]) -> None:
    """Write ``data`` as YAML atomically."""
    with atomic_write(path) as fh:
        yaml.safe_dump(_plain(data), fh, sort_keys=False)
