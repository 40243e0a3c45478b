"""Lazy imports of the optional ONNX pieces, with one clear error naming the extra."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from slim_deploy.errors import MissingExtraError

__all__ = ["require", "available"]

_EXTRA = {"paddle2onnx": "onnx", "onnxruntime": "onnx", "onnx": "onnx"}
_WHAT = {"paddle2onnx": "ONNX export", "onnxruntime": "the ONNX Runtime backend", "onnx": "reading ONNX models"}


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str) -> ModuleType:
    """Import an optional dependency or raise :class:`MissingExtraError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRA.get(module, "onnx")
        raise MissingExtraError(
            f"{_WHAT.get(module, module)} needs the Python package {module!r}, which is not installed ({exc}); "
            f"install it with `pip install 'slim-deploy[{extra}]'`"
        ) from exc
