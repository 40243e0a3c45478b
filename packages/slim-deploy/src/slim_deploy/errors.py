"""Errors specific to slim-deploy; all derive from slim_core errors."""

from __future__ import annotations

from slim_core.errors import ExportError, SlimError

__all__ = ["MissingExtraError", "VerificationError"]


class MissingExtraError(SlimError, ImportError):
    """An optional dependency (ONNX export, ONNX Runtime) is not installed; the message names the extra."""


class VerificationError(ExportError):
    """An exported model's outputs differ from the source beyond the tolerance the caller set."""
