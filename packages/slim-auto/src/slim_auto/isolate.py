"""Run a function in a child Python process with a timeout, so a native crash cannot end the run.

Converters (paddle2onnx, Paddle's INT8 passes) and runtimes can abort the whole
process (``SIGABRT``, ``SIGSEGV``) on a model they do not handle. The function
runs in a fresh interpreter (``subprocess``, not ``fork``: Paddle's threads do not
survive a fork); arguments and the result travel as JSON. A crash, a timeout or
an exception becomes an :class:`IsolatedError` carrying the child's last error line.

The child never outlives the run: when the caller is interrupted (Ctrl-C, or SIGTERM
turned into an exception by the ``slim`` command) the child is terminated, killed
after a short grace and reaped before the exception goes on; on Linux the child also
asks the kernel for ``SIGKILL`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so
even a ``kill -9`` of the run leaves no converter behind writing files. (The signal
follows the thread that started the child: call this from a thread that outlives it.)
Elsewhere that last guard is absent and an orphaned child ends on its own or by timeout.

Example:
    >>> run_isolated("os.path:join", {"a": "x", "p": "y"}, timeout=60)   # doctest: +SKIP
    'x/y'
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from slim_core import SlimError
from slim_core.log import get_logger, is_native_noise

__all__ = ["IsolatedError", "run_isolated"]

log = get_logger(__name__)

# The child only imports the function's module: a crash test or a light function starts fast.
_CHILD = r"""
import importlib, json, os, sys, traceback
try:  # Linux: die with the parent (PR_SET_PDEATHSIG = 1), whatever kills it
    import ctypes, signal
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))
except Exception:  # no prctl on this system: the parent still stops the child when it is interrupted
    pass
else:
    if os.getppid() != int(sys.argv[2]):  # the parent died before prctl took effect
        os._exit(1)
job = json.load(open(sys.argv[1], encoding="utf-8"))
sys.path[:0] = [p for p in job["sys_path"] if p not in sys.path]
mod, _, name = job["fn"].partition(":")
fn = importlib.import_module(mod)
for part in name.split("."):
    fn = getattr(fn, part)
try:
    result = {"ok": True, "value": fn(**job["kwargs"])}
except BaseException as exc:
    traceback.print_exc()
    result = {"ok": False, "error": type(exc).__name__ + ": " + (str(exc).strip().splitlines() or [""])[0][:400]}
with open(job["result"], "w", encoding="utf-8") as fh:
    json.dump(result, fh, default=str)
"""


# Seconds a child gets to exit after SIGTERM before SIGKILL (it holds nothing worth saving).
_GRACE_S = 3.0


class IsolatedError(SlimError):
    """The child process crashed, timed out or raised; the message says which and why."""


def _last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not is_native_noise(ln)] or lines
    for ln in reversed(useful):  # the most specific line: an error or an abort reason
        low = ln.lower()
        if any(k in low for k in ("error", "abort", "terminate", "only support", "fatal", "exception", "failed")):
            return ln[:300]
    return useful[-1][:300] if useful else ""


def _stop(proc: subprocess.Popen[str]) -> None:
    """Terminate ``proc``, kill it after :data:`_GRACE_S`, and reap it (a second Ctrl-C goes straight to the kill)."""
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_isolated(fn: str, kwargs: dict[str, Any], *, timeout: float, work_dir: str | os.PathLike[str] | None = None) -> Any:
    """Call ``fn(**kwargs)`` (``"module:function"``) in a child interpreter; return its JSON result.

    Args:
        fn: ``"package.module:function"``, importable with this process's ``sys.path``.
        kwargs: JSON-serialisable keyword arguments.
        timeout: seconds before the child is killed.
        work_dir: where the job and result files go (a temporary directory by default).

    Raises:
        IsolatedError: the child died from a signal, exited with an error, timed out or raised.
        KeyboardInterrupt: the caller was interrupted; the child is already stopped and reaped,
            and its temporary directory removed.
    """
    with tempfile.TemporaryDirectory(prefix="slim-isolate-", dir=work_dir) as tmp:
        job = Path(tmp) / "job.json"
        result = Path(tmp) / "result.json"
        job.write_text(json.dumps({"fn": fn, "kwargs": kwargs, "sys_path": sys.path, "result": str(result)}, default=str), encoding="utf-8")
        log.debug("child process: %s", fn)
        with subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(job), str(os.getpid())],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        ) as proc:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise IsolatedError(f"{fn.rpartition(':')[2]} did not finish within {timeout:g} s (child process killed)") from exc
            finally:  # a timeout or an interruption of this process: the child goes with it
                _stop(proc)
        for line in (stdout + stderr).splitlines():
            log.debug("child: %s", line)
        if proc.returncode < 0:
            try:
                sig = signal.Signals(-proc.returncode).name
            except ValueError:
                sig = f"signal {-proc.returncode}"
            why = _last_error_line(stderr)
            raise IsolatedError(f"the process crashed ({sig})" + (f": {why}" if why else ""))
        if not result.exists():
            why = _last_error_line(stderr)
            raise IsolatedError(f"the process exited with code {proc.returncode}" + (f": {why}" if why else ""))
        data = json.loads(result.read_text(encoding="utf-8"))
        if not data.get("ok"):
            raise IsolatedError(data.get("error") or "the child process failed")
        return data.get("value")
