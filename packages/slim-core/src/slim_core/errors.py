"""Exception classes shared by every slim package.

Every error slim raises on purpose is a :class:`SlimError`, so callers can catch
one type; the subclasses say which kind of input was wrong.
"""

from __future__ import annotations

import re

__all__ = [
    "SlimError",
    "ConfigError",
    "ModelLoadError",
    "UnsupportedOpError",
    "DataError",
    "PaddleVersionError",
    "ExportError",
    "OutputExistsError",
    "error_summary",
    "MissingExtraError",
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


_PADDLE_KIND = re.compile(
    r"\((InvalidArgument|PreconditionNotMet|NotFound|OutOfRange|Unimplemented|Unavailable|Fatal|External|AlreadyExists|PermissionDenied|ResourceExhausted|InvalidType)\)"
)


def error_summary(exc: BaseException, limit: int = 300) -> str:
    """``"Type: first meaningful line"`` of an exception, for messages that wrap a foreign error.

    Paddle's messages often start with a C++ traceback; the line naming the error kind
    (``(InvalidArgument) ...``) is the one a user needs.

    Example:
        >>> error_summary(ValueError("\\nC++ Traceback\\n(InvalidArgument) bad shape [3] vs [4]\\n  at conv.cc"))
        'ValueError: (InvalidArgument) bad shape [3] vs [4]'
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if lines and lines[0].startswith("In transformed code"):  # dy2static: the cause is the last line
        line = lines[-1]
    else:
        line = next((ln for ln in lines if _PADDLE_KIND.search(ln)), lines[0] if lines else "")
    return f"{type(exc).__name__}: {line[:limit]}" if line else type(exc).__name__
