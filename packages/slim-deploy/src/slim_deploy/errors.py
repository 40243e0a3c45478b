"""Errors specific to slim-deploy; all derive from slim_core errors.

``MissingExtraError`` and ``error_summary`` are slim-core's (one missing-extra error for every package).
"""

from __future__ import annotations

from slim_core.errors import ExportError, MissingExtraError, error_summary

__all__ = ["MissingExtraError", "VerificationError", "error_summary"]


class VerificationError(ExportError):
    """An exported model's outputs differ from the source beyond the tolerance the caller set."""
