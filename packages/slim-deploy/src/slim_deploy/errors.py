"""Errors specific to slim-deploy; all derive from slim_core errors."""

from __future__ import annotations

from slim_core.errors import ExportError, SlimError

__all__ = ["MissingExtraError", "VerificationError"]


class MissingExtraError(SlimError, ImportError):
    """An optional dependency (ONNX export, ONNX Runtime) is not installed; the message names the extra."""


class VerificationError(ExportError):
    """An exported model's outputs differ from the source beyond the tolerance the caller set."""


def summarize(exc: BaseException, limit: int = 300) -> str:
    """One informative line of a (often very long) Paddle / paddle2onnx / ONNX Runtime error.

    Paddle's dy2static errors start with "In transformed code:" and a traceback; the
    cause is the last line, so that one is kept.
    """
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if lines[0].startswith("In transformed code") else lines[0]
    return line[:limit]
