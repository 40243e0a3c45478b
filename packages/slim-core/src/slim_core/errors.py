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
    "MissingExtraError",
    "summarize",
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


class MissingExtraError(SlimError, ImportError):
    """An optional dependency (ONNX Runtime, OpenVINO, paddle2onnx, Optuna, matplotlib, ...) is not installed.

    The one error every slim package raises for a missing extra; the message names
    what needed it and the ``pip install`` command that brings it (see
    :func:`slim_core.extras.require`).
    """


def summarize(exc: BaseException, limit: int = 300) -> str:
    """One informative line of a (often very long) Paddle / paddle2onnx / runtime error.

    Paddle's dy2static errors start with "In transformed code:" and a traceback; the
    cause is the last line, so that one is kept.

    Example:
        >>> summarize(ValueError("bad shape\\n  at line 3"))
        'bad shape'
    """
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if lines[0].startswith("In transformed code") else lines[0]
    return line[:limit]
