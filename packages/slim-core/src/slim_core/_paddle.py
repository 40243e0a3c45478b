"""Paddle import guard: one clear error when Paddle is missing or too old."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

from slim_core.errors import PaddleVersionError

__all__ = ["require_paddle", "paddle_version", "MIN_PADDLE", "MAX_PADDLE_MAJOR"]

MIN_PADDLE = (3, 0)
MAX_PADDLE_MAJOR = 4
_INSTALL_HINT = (
    "install the CPU build with `pip install slim-core[cpu]` (or `pip install 'paddlepaddle>=3.0,<4' setuptools`), "
    "or the GPU build `paddlepaddle-gpu>=3.0` yourself"
)


def _parse(version: str) -> tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return (0, 0)


def paddle_version() -> str | None:
    """Return the installed Paddle version string, or None when Paddle is absent."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    for dist in ("paddlepaddle", "paddlepaddle-gpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def require_paddle() -> ModuleType:
    """Import Paddle and check its version.

    Returns:
        The imported ``paddle`` module.

    Raises:
        PaddleVersionError: Paddle cannot be imported (it also needs ``setuptools``)
            or its version is not 3.x.

    Example:
        >>> paddle = require_paddle()
    """
    try:
        with warnings.catch_warnings():
            # paddle warns about a missing ccache on every import; it only matters for C++ extensions
            warnings.filterwarnings("ignore", message=".*ccache.*")
            paddle = importlib.import_module("paddle")
    except ImportError as exc:  # the message of exc says what is missing (paddle or setuptools)
        raise PaddleVersionError(f"slim needs PaddlePaddle 3.x, which could not be imported ({exc}); {_INSTALL_HINT}") from exc
    ver = getattr(paddle, "__version__", "0.0")
    major_minor = _parse(ver)
    if ver != "0.0.0" and (major_minor < MIN_PADDLE or major_minor[0] >= MAX_PADDLE_MAJOR):
        # 0.0.0 is what develop builds report; let them through.
        raise PaddleVersionError(f"slim needs PaddlePaddle >=3.0,<4 but found {ver}; {_INSTALL_HINT}")
    return paddle
