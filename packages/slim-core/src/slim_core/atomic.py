"""Atomic outputs: write into a temporary sibling, then rename into place.

A crash or an exception part-way leaves the destination untouched, so no caller
ever sees half a model file.

Files and directories are created with the modes every other tool uses (``0666`` /
``0777`` less the umask), and a file that replaces another keeps its mode. The
temporary sibling is named ``.NAME.slim-HOST-PID-TOKEN.tmp``; one left by a process
that was killed is removed by the next atomic write to the same destination, once it
is safely stale: its writer ran on this host and is gone, or it is older than
:data:`STALE_AFTER_S` (a writer on another host sharing the directory).

Replacing a directory takes two renames (the old one to ``.NAME.old``, the new one into
place); a process killed between them leaves no ``NAME`` at all. The next atomic write
(and a reader that calls :func:`restore_interrupted_dir`) moves ``.NAME.old`` back first,
so the previous complete version is never lost.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from slim_core.errors import OutputExistsError, SlimError

__all__ = [
    "atomic_write",
    "atomic_dir",
    "check_writable",
    "remove_stale_temporaries",
    "restore_interrupted_dir",
    "STALE_AFTER_S",
]

#: Age after which a temporary sibling is stale whoever wrote it (a writer on another host).
STALE_AFTER_S = 24 * 3600.0
_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
# mkstemp/mkdtemp names of earlier versions: ".NAME." + 8 random characters + ".tmp"
_OLD_TOKEN = re.compile(r"[a-z0-9_]{8}")


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


def _tmp_name(p: Path) -> Path:
    return p.with_name(f".{p.name}.slim-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) sends CTRL_C_EVENT on Windows: rely on the age alone there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as exc:  # EPERM: it exists, owned by someone else
        return exc.errno == errno.EPERM
    return True


def remove_stale_temporaries(path: str | os.PathLike[str], *, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove temporary siblings of ``path`` left by interrupted atomic writes.

    Only names slim itself gives temporaries (``.NAME.slim-HOST-PID-TOKEN.tmp``, and the
    ``.NAME.XXXXXXXX.tmp`` of earlier versions) are considered, and only stale ones: written
    on this host by a process that no longer runs, or older than ``max_age_s``. A live
    writer's temporary is never touched.

    Returns:
        The paths removed.

    Example:
        >>> remove_stale_temporaries("out/model")  # doctest: +SKIP
        [PosixPath('out/.model.slim-1a2b3c4d-4242-9f8e7d6c.tmp')]
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    prefix = f".{p.name}."
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        middle = name[len(prefix) : -len(".tmp")]
        parts = middle.split("-")
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if len(parts) == 4 and parts[0] == "slim" and parts[2].isdigit():
            mine = parts[1] == _HOST
            pid = int(parts[2])
            if pid == os.getpid() and mine:
                continue  # this process (another thread may be writing it)
            stale = (mine and not _alive(pid)) or age > max_age_s
        elif _OLD_TOKEN.fullmatch(middle):
            stale = age > max_age_s
        else:
            continue
        if not stale:
            continue
        target = parent / name
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(target)
            else:
                target.unlink()
        except OSError:
            continue
        removed.append(target)
    return removed


def _old_name(p: Path) -> Path:
    return p.with_name(f".{p.name}.old")


def restore_interrupted_dir(path: str | os.PathLike[str]) -> bool:
    """Put back the previous version of ``path`` when a directory replacement was killed half-way.

    :func:`atomic_dir` moves an existing ``NAME`` to ``.NAME.old`` and then the new one
    into place; a kill between the two renames leaves only ``.NAME.old``. Call this before
    reading ``path`` (a checkpoint to resume from); :func:`atomic_dir` calls it itself.

    Returns:
        True when ``.NAME.old`` was moved back to ``path``.

    Example:
        >>> restore_interrupted_dir("ckpt/last")  # doctest: +SKIP
        True
    """
    p = Path(path)
    old = _old_name(p)
    if os.path.lexists(p) or not old.is_dir() or old.is_symlink():
        return False
    try:
        os.replace(old, p)
    except OSError:  # another writer got there first
        return False
    return True


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", *, overwrite: bool = True, encoding: str | None = None) -> Iterator:
    """Open a temporary file next to ``path``; rename it over ``path`` on success.

    The file gets mode ``0666`` less the umask, or the mode of the file it replaces.

    Example:
        >>> with atomic_write("out.json") as f:  # doctest: +SKIP
        ...     f.write("{}")
    """
    p = check_writable(path, overwrite=overwrite)
    remove_stale_temporaries(p)
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    tmp = _tmp_name(p)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(p).st_mode))  # a replaced file keeps its mode
        except FileNotFoundError:
            pass
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` when the block succeeds.

    Used for outputs made of several files (a model plus its manifest): either all
    of them appear, or none does. The directory gets mode ``0777`` less the umask.
    A previous version left as ``.NAME.old`` by a replacement killed half-way is first
    moved back (see :func:`restore_interrupted_dir`).

    Example:
        >>> with atomic_dir("out/model", overwrite=True) as tmp:  # doctest: +SKIP
        ...     (tmp / "weights.npz").write_bytes(data)
    """
    restore_interrupted_dir(path)
    p = check_writable(path, overwrite=overwrite)
    remove_stale_temporaries(p)
    tmp = _tmp_name(p)
    os.mkdir(tmp, 0o777)
    try:
        yield tmp
        if p.exists():
            old = _old_name(p)
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
