"""Errors specific to slim-deploy; all derive from slim_core errors.

``MissingExtraError`` and ``summarize`` are slim-core's (one missing-extra error for every package).
"""

from __future__ import annotations

from slim_core.errors import ExportError, MissingExtraError, summarize

__all__ = ["MissingExtraError", "VerificationError", "summarize"]


class VerificationError(ExportError):
    """An exported model's outputs differ from the source beyond the tolerance the caller set."""
