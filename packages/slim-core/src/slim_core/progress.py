"""Progress bars (tqdm) that one switch silences for scripts and tests."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["progress", "set_quiet", "is_quiet", "quiet"]

T = TypeVar("T")
_QUIET = os.environ.get("SLIM_QUIET", "") not in ("", "0", "false")


def set_quiet(value: bool = True) -> None:
    """Turn all slim progress bars off (True) or on (False)."""
    global _QUIET
    _QUIET = bool(value)


def is_quiet() -> bool:
    """Whether progress bars are silenced (``set_quiet`` or ``SLIM_QUIET=1``)."""
    return _QUIET


@contextmanager
def quiet() -> Iterator[None]:
    """Context manager that silences progress bars inside its block."""
    old = _QUIET
    set_quiet(True)
    try:
        yield
    finally:
        set_quiet(old)


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, *, disable: bool | None = None) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar unless slim is quiet.

    Example:
        >>> for batch in progress(range(3), desc="calibrate"):
        ...     pass
    """
    if disable is None:
        disable = _QUIET
    if disable:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a declared dependency; stay usable if someone vendored without it
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)
