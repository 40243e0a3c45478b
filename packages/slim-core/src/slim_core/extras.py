"""Optional dependencies: import them lazily, or raise one :class:`MissingExtraError` with the install command.

Heavy backends (ONNX Runtime, OpenVINO, paddle2onnx, Optuna, matplotlib) are
imported only inside the functions that need them, through :func:`require`, so
every package reports a missing one the same way.

Example:
    >>> from slim_core.extras import available, require
    >>> available("json")
    True
    >>> require("no_such_module_xyz", package="slim-deploy", extra="onnx")   # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    slim_core.errors.MissingExtraError: ... pip install 'slim-deploy[onnx]'
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from slim_core.errors import MissingExtraError

__all__ = ["require", "available", "install_command", "PIP_NAMES"]

PIP_NAMES: dict[str, str] = {
    "onnxruntime": "onnxruntime>=1.16",
    "openvino": "openvino>=2024",
    "paddle2onnx": "paddle2onnx>=2.0",
    "onnx": "onnx>=1.14",
    "optuna": "optuna>=3.4",
    "matplotlib": "matplotlib>=3.5",
    "safetensors": "safetensors>=0.4",
}
"""Distribution spec per module, used in the message when no slim extra is named."""

_WHAT = {
    "onnxruntime": "the ONNX Runtime backend",
    "openvino": "the OpenVINO backend",
    "paddle2onnx": "ONNX export",
    "onnx": "reading ONNX models",
    "optuna": "this search strategy",
    "matplotlib": "plotting",
}


def available(module: str) -> bool:
    """Whether ``module`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def install_command(module: str, package: str | None = None, extra: str | None = None) -> str:
    """``pip install 'slim-deploy[onnx]'`` when a slim extra is named, else ``pip install 'onnxruntime>=1.16'``."""
    if package and extra:
        return f"pip install '{package}[{extra}]'"
    return f"pip install '{PIP_NAMES.get(module, module)}'"


def require(module: str, *, package: str | None = None, extra: str | None = None, what: str | None = None) -> ModuleType:
    """Import an optional dependency or raise :class:`MissingExtraError` with the command that installs it.

    Args:
        module: the module to import (``"onnxruntime"``, ``"openvino"``, ...).
        package, extra: the slim distribution and extra that bring it (``"slim-deploy"``, ``"openvino"``).
        what: what needs it, for the message (default: a description of the module).

    Raises:
        MissingExtraError: the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        need = what or _WHAT.get(module, module)
        raise MissingExtraError(
            f"{need} needs the Python package {module!r}, which is not installed ({exc}); "
            f"install it with `{install_command(module, package, extra)}`"
        ) from exc
