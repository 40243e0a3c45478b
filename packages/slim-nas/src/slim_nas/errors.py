"""Errors raised by slim-nas (all are slim_core errors)."""

from __future__ import annotations

from slim_core import ConfigError, SlimError

__all__ = ["StorageError", "InfeasibleConstraintError", "MissingExtraError"]


class StorageError(SlimError, OSError):
    """The Optuna storage URL cannot be opened (bad URL, missing driver, unwritable path)."""


class InfeasibleConstraintError(ConfigError):
    """No architecture of the space meets a constraint; the message gives the closest value found."""


class MissingExtraError(SlimError, ImportError):
    """An optional dependency is needed; the message names the slim-nas extra that brings it."""


def require_optuna(what: str):
    """Import optuna or raise MissingExtraError naming ``what`` needs it."""
    try:
        import optuna
    except ImportError as exc:
        raise MissingExtraError(f"{what} needs Optuna; install it with: pip install 'slim-nas[optuna]'") from exc
    return optuna
