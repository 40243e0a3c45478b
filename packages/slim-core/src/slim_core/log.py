"""Logging for every slim package: one ``slim`` logger hierarchy, and native noise kept quiet.

Packages log through ``get_logger(__name__)`` (``slim_auto.engine`` becomes
``slim.auto.engine``), so ``logging.getLogger("slim")`` controls all of them. A
library user sees nothing unless they configure logging; the ``slim`` command calls
:func:`configure` (INFO by default, DEBUG with ``-v``, WARNING with ``-q``).

Paddle's C++ side writes glog lines to stderr and oneDNN pass reports
(``--- quantized 12 ops``) straight to file descriptor 1, where Python's
``sys.stdout`` redirection cannot catch them. :func:`native_output` redirects the
file descriptors themselves around a block and hands what was caught to the
``slim.native`` logger at DEBUG (shown with ``-v``); lines that are not known
native noise (a user's ``print``) are written back to the terminal.
:func:`quiet_native_defaults` sets the environment switches (``GLOG_minloglevel``,
``FLAGS_...``) before Paddle is imported.

Example:
    >>> log = get_logger("slim_auto.engine")
    >>> log.name
    'slim.auto.engine'
    >>> with native_output():
    ...     pass
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["get_logger", "configure", "native_output", "quiet_native_defaults", "is_native_noise", "NATIVE_LOGGER"]

NATIVE_LOGGER = "slim.native"
_ENV_DEFAULTS = {
    "GLOG_minloglevel": "2",  # glog: errors only
    "GLOG_v": "0",
    "FLAGS_call_stack_level": "1",
}
# what Paddle / oneDNN / glog print on their own: pass reports, glog prefixes, Paddle's banners
_NOISE = re.compile(
    r"^\s*(?:\x1b\[[0-9;]*m|\[[0-9;]+m)*\s*(?:---|[IWEF]\d{4} \d|\[Paddle2ONNX\]|\[(?:oneDNN|MKLDNN|Paddle)\b"
    r"|\[[!EWIV]\] |\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,?\d* \[(?:INFO|WARNING|DEBUG)\]|Note: Error was)"
)
_lock = threading.Lock()
_depth = 0


def get_logger(name: str) -> logging.Logger:
    """The logger of a slim module: ``slim_auto.engine`` -> ``slim.auto.engine``.

    Example:
        >>> get_logger("slim_quant").name
        'slim.quant'
    """
    if name.startswith("slim_"):
        name = "slim." + name[len("slim_") :]
    elif name != "slim" and not name.startswith("slim."):
        name = "slim." + name
    return logging.getLogger(name)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"[slim] {prefix}{record.getMessage()}"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (tests and notebooks swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(verbosity: int = 0, stream: object = None) -> logging.Logger:
    """Set up the ``slim`` logger for a command-line run.

    Args:
        verbosity: 0 for INFO, 1 or more for DEBUG (native output shown too), -1 for WARNING only.
        stream: where log lines go (default ``sys.stderr``).

    Returns:
        The ``slim`` logger.

    Example:
        >>> _ = configure(0)
    """
    root = logging.getLogger("slim")
    level = logging.DEBUG if verbosity > 0 else (logging.WARNING if verbosity < 0 else logging.INFO)
    root.setLevel(level)
    for h in list(root.handlers):
        if getattr(h, "_slim", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()  # type: ignore[arg-type]
    handler._slim = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter())
    root.addHandler(handler)
    root.propagate = False
    return root


def quiet_native_defaults(verbose: bool = False) -> None:
    """Set the environment switches that keep glog and Paddle's C++ side quiet (before ``import paddle``).

    Values the user already set are kept; with ``verbose`` nothing is changed.
    """
    if verbose:
        return
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def is_native_noise(line: str) -> bool:
    """Whether ``line`` looks like glog / oneDNN / Paddle pass output rather than a user's print."""
    return bool(_NOISE.match(line))


@contextmanager
def native_output(logger: logging.Logger | None = None) -> Iterator[None]:
    """Catch what C++ code writes to stdout/stderr (file descriptors 1 and 2) inside the block.

    Native noise goes to ``slim.native`` at DEBUG; other lines are written back to the
    terminal after the block. When the ``slim.native`` logger is enabled for DEBUG
    (``slim -v``), nothing is caught. Nested blocks catch once.
    """
    global _depth
    log = logger or logging.getLogger(NATIVE_LOGGER)
    if log.isEnabledFor(logging.DEBUG) or os.environ.get("SLIM_NATIVE_OUTPUT") == "1":
        yield
        return
    with _lock:
        outer = _depth == 0
        _depth += 1
    if not outer:
        try:
            yield
        finally:
            with _lock:
                _depth -= 1
        return
    saved: list[tuple[int, int, object]] = []
    files = []
    try:
        for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
            try:
                stream.flush()  # Python's buffered text first, so it lands before the redirect
            except (AttributeError, OSError, ValueError):
                pass
            tmp = tempfile.TemporaryFile(mode="w+b")
            saved.append((fd, os.dup(fd), stream))
            os.dup2(tmp.fileno(), fd)
            files.append((fd, tmp))
    except OSError:  # pragma: no cover - no free descriptors: run without catching
        pass
    try:
        yield
    finally:
        for fd, copy, stream in saved:
            try:
                stream.flush()  # type: ignore[union-attr]
            except (OSError, ValueError):
                pass
            os.dup2(copy, fd)
            os.close(copy)
        for fd, tmp in files:
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            tmp.close()
            keep = []
            for line in text.splitlines():
                if not line.strip():
                    continue
                if is_native_noise(line):
                    log.debug(line)
                else:
                    keep.append(line)
            if keep:
                target = sys.stdout if fd == 1 else sys.stderr
                target.write("\n".join(keep) + "\n")
                target.flush()
        with _lock:
            _depth -= 1
