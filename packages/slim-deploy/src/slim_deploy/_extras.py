"""Lazy imports of slim-deploy's optional pieces through :func:`slim_core.extras.require` (kept for older imports)."""

from __future__ import annotations

from types import ModuleType

from slim_core.extras import available
from slim_core.extras import require as _require

__all__ = ["require", "available"]

_EXTRA = {"paddle2onnx": "onnx", "onnxruntime": "onnx", "onnx": "onnx", "openvino": "openvino"}


def require(module: str) -> ModuleType:
    """Import an optional dependency or raise slim-core's ``MissingExtraError`` naming ``pip install 'slim-deploy[<extra>]'``."""
    return _require(module, package="slim-deploy", extra=_EXTRA.get(module, "onnx"))
