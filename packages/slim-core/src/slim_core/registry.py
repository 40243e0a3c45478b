"""Registries: plain dicts filled by a decorator, so users can add their own entries."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, TypeVar

from slim_core.errors import ConfigError

__all__ = ["Registry", "closest"]

T = TypeVar("T")


def closest(name: str, candidates: list[str] | tuple[str, ...] | Any) -> str | None:
    """Return the candidate closest to ``name`` or None when nothing is similar."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.5)
    return matches[0] if matches else None


class Registry(dict):
    """A named ``dict`` of implementations filled by :meth:`register`.

    Args:
        kind: what the entries are, used in error messages (e.g. ``"calibrator"``).

    Example:
        >>> CRITERIA = Registry("criterion")
        >>> @CRITERIA.register("l1")
        ... def l1(w):
        ...     return abs(w).sum()
        >>> CRITERIA.get("l1") is l1
        True
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        """Decorator that stores the decorated object under ``name``."""

        def deco(obj: T) -> T:
            if name in self and not overwrite:
                raise ConfigError(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it")
            self[name] = obj
            return obj

        return deco

    def get(self, name: str, default: Any = ...) -> Any:  # type: ignore[override]
        """Return the entry ``name``; unknown names raise ConfigError listing the known ones."""
        if name in self:
            return self[name]
        if default is not ...:
            return default
        hint = closest(name, list(self))
        did = f" (did you mean {hint!r}?)" if hint else ""
        raise ConfigError(f"unknown {self.kind} {name!r}{did}; known: {', '.join(sorted(self)) or 'none'}")

    def names(self) -> list[str]:
        """Sorted names of all entries."""
        return sorted(self)
