"""Errors raised by slim-nas (all are slim_core errors)."""

from __future__ import annotations

from slim_core import ConfigError, SlimError
from slim_core.errors import MissingExtraError
from slim_core.extras import require

__all__ = ["StorageError", "InfeasibleConstraintError", "MissingExtraError"]


class StorageError(SlimError, OSError):
    """The Optuna storage URL cannot be opened (bad URL, missing driver, unwritable path)."""


class InfeasibleConstraintError(ConfigError):
    """No architecture of the space meets a constraint; the message gives the closest value found."""


def require_optuna(what: str):
    """Import optuna or raise slim-core's MissingExtraError naming ``what`` needs it and ``pip install 'slim-nas[optuna]'``."""
    return require("optuna", package="slim-nas", extra="optuna", what=what)
