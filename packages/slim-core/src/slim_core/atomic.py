"""Atomic outputs: write into a temporary sibling, then rename into place.

A crash or an exception part-way leaves the destination untouched, so no caller
ever sees half a model file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from slim_core.errors import OutputExistsError, SlimError

__all__ = ["atomic_write", "atomic_dir", "check_writable"]


def check_writable(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Check before any work starts that ``path`` may be written.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        SlimError: the parent directory cannot be created or written.
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p} exists; pass overwrite=True to replace it")
    parent = p.parent if str(p.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SlimError(f"cannot create output directory {parent}: {exc.strerror or exc}") from exc
    if not os.access(parent, os.W_OK):
        raise SlimError(f"output directory {parent} is not writable")
    return p


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", *, overwrite: bool = True, encoding: str | None = None) -> Iterator:
    """Open a temporary file next to ``path``; rename it over ``path`` on success.

    Example:
        >>> with atomic_write("out.json") as f:  # doctest: +SKIP
        ...     f.write("{}")
    """
    p = check_writable(path, overwrite=overwrite)
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` when the block succeeds.

    Used for outputs made of several files (a model plus its manifest): either all
    of them appear, or none does.
    """
    p = check_writable(path, overwrite=overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent))
    try:
        yield tmp
        if p.exists():
            old = p.with_name(f".{p.name}.old")
            if old.exists():
                shutil.rmtree(old) if old.is_dir() else old.unlink()
            os.replace(p, old)
            os.replace(tmp, p)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, p)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
