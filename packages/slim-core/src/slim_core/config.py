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
import math
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
    "MAX_YAML_BYTES",
    "MAX_YAML_NODES",
    "MAX_INT",
    "short_repr",
    "check_value",
]

C = TypeVar("C", bound="SlimConfig")
_MISSING = object()

#: Largest YAML file or text :func:`load_yaml` reads (configs and recipes are a few KB).
MAX_YAML_BYTES = 1 << 20
#: Most values a YAML document may hold, counting each use of an alias as a copy of what it
#: names: bounds the work a hostile file (an alias "billion laughs" bomb, 20,000 stages) can cause.
MAX_YAML_NODES = 20_000
#: Integer config values must fit in a signed 64-bit integer (what Paddle and numpy take).
MAX_INT = (1 << 63) - 1


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
            raise ConfigError(f"{path}: expected a number, got {type(value).__name__} {short_repr(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{path}: expected a finite number, got {short_repr(value)}")
        return number
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {type(value).__name__} {short_repr(value)}")
        if not -MAX_INT - 1 <= value <= MAX_INT:
            raise ConfigError(f"{path}: {short_repr(value)} does not fit in a 64-bit integer")
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


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr`` of a value, cut to ``limit`` characters for messages (a 400-digit integer stays readable).

    Example:
        >>> short_repr("x" * 100, limit=10)
        "'xxxxxx..."
    """
    try:
        text = repr(value)
    except ValueError:  # ints above sys.get_int_max_str_digits() refuse repr
        return f"<{type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_value(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the type annotation ``tp`` as config fields are checked; return it converted.

    Raises:
        ConfigError: naming ``path``, when the value does not fit (a non-finite float, an
            integer beyond 64 bits, a string outside a ``Literal``, ...).

    Example:
        >>> check_value(3, float, "lr")
        3.0
    """
    return _convert(value, tp, path)


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
        """Build the config from a dict; unknown keys raise ConfigError naming the closest valid key.

        ``None`` (an empty YAML document) gives the defaults; any other value that is
        not a mapping (a list, a string, ``0``, ``False``) is a ConfigError.
        """
        if data is None:
            data = {}
        try:
            return cls._from_dict(data, cls.__name__)
        except RecursionError as exc:  # a dict that contains itself
            raise ConfigError(f"{cls.__name__}: the value refers to itself (or is nested too deeply)") from exc

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


class _CountingLoader(yaml.SafeLoader):
    """The safe loader, stopping once a document holds more than ``max_nodes`` nodes."""

    max_nodes = MAX_YAML_NODES

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102 - yaml's hook
        self._nodes = getattr(self, "_nodes", 0) + 1
        if self._nodes > self.max_nodes:
            mark = self.peek_event().start_mark if self.check_event() else None
            at = f" (at line {mark.line + 1})" if mark is not None else ""
            raise _TooBig(f"more than {self.max_nodes:,} values{at}")
        return super().compose_node(parent, index)


class _TooBig(Exception):
    pass


def _expanded_size(data: Any, limit: int) -> int:
    """Number of values in ``data`` once every alias is expanded; raise _TooBig past ``limit`` or on a cycle.

    Shared sub-structures (YAML aliases) are sized once and counted at each use, so
    the work is proportional to the distinct nodes, not to the expansion.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(v: Any) -> int:
        if not isinstance(v, (list, dict)):
            return 1
        key = id(v)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _TooBig("a value that contains itself (a self-referencing alias)")
        active.add(key)
        items = list(v.keys()) + list(v.values()) if isinstance(v, dict) else v
        total = 1
        for item in items:
            total += size(item)
            if total > limit:
                raise _TooBig(f"more than {limit:,} values once aliases are expanded")
        active.discard(key)
        sizes[key] = total
        return total

    return size(data)


def load_yaml(source: str | os.PathLike[str], *, max_bytes: int = MAX_YAML_BYTES, max_nodes: int = MAX_YAML_NODES) -> Any:
    """Parse YAML from a path or a string with the safe loader.

    The work is bounded: a file larger than ``max_bytes``, or a document holding more
    than ``max_nodes`` values (aliases counted at every use), is refused before it is
    expanded, and a self-referencing alias is refused.

    Raises:
        ConfigError: the file is missing, too large, not UTF-8, the YAML is malformed
            (line and column given), or it exceeds the bounds above.

    Example:
        >>> load_yaml("a: 1\\nb: [x, y]\\n")
        {'a': 1, 'b': ['x', 'y']}
    """
    text: str
    where = "<string>"
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml", ".json"))):
        p = Path(source)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        where = str(p)
        size = p.stat().st_size
        if size > max_bytes:
            raise ConfigError(f"config file {p} is {size:,} bytes; configs are limited to {max_bytes:,} bytes")
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {p} is not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from exc
    else:
        text = str(source)
        if len(text) > max_bytes:
            raise ConfigError(f"YAML text of {len(text):,} characters; configs are limited to {max_bytes:,} bytes")
    loader = _CountingLoader(text)
    loader.max_nodes = max_nodes
    try:
        data = loader.get_single_data()
        _expanded_size(data, max_nodes)
    except _TooBig as exc:
        raise ConfigError(f"YAML in {where} is refused: {exc}; configs are limited to {max_nodes:,} values") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"malformed YAML in {where}{at}: {problem}") from exc
    except RecursionError as exc:
        raise ConfigError(f"YAML in {where} is nested too deeply") from exc
    finally:
        loader.dispose()
    return data


def dump_yaml(data: Any, path: str | os.PathLike[str]) -> None:
    """Write ``data`` as YAML atomically."""
    with atomic_write(path) as fh:
        yaml.safe_dump(_plain(data), fh, sort_keys=False)
