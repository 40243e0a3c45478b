"""Exception classes shared by every slim package.

Every error slim raises on purpose is a :class:`SlimError`, so callers can catch
one type; the subclasses say which kind of input was wrong.
"""

from __future__ import annotations

__all__ = [
    "SlimError",
    "ConfigError",
    "ModelLoadError",
    "UnsupportedOpError",
    "DataError",
    "PaddleVersionError",
    "ExportError",
    "OutputExistsError",
]


class SlimError(Exception):
    """Base class of all errors raised by slim."""


class ConfigError(SlimError, ValueError):
    """A configuration value, key or recipe is invalid."""


class ModelLoadError(SlimError, OSError):
    """A model file is missing, corrupt or in an unknown format."""


class UnsupportedOpError(SlimError):
    """The model contains an operator slim has no rule for."""


class DataError(SlimError, ValueError):
    """Input data is empty, mis-shaped, of the wrong dtype or not finite."""


class PaddleVersionError(SlimError, ImportError):
    """Paddle is missing or its version is outside the supported range."""


class ExportError(SlimError):
    """A model could not be exported or verified after export."""


class OutputExistsError(SlimError, FileExistsError):
    """An output path exists and would be overwritten without ``overwrite=True``."""
