"""Trace a dygraph model into a legacy (ProgramDesc) program although it calls ``_C_ops``-only functions.

Paddle 3.3.1 binds ``paddle.multiply``, ``paddle.matmul``, ``paddle.bmm``, ``F.sigmoid``, ``F.gelu``,
``paddle.tanh``, ``paddle.sqrt`` and ``paddle.exp`` to ``_C_ops`` only: traced under ``OldIrGuard`` they
raise ``multiply(): argument (position 1) must be Value, but got Variable``. Every PaddleClas SE block
(``paddle.multiply``) and hand-written attention (``paddle.matmul``) hits this, and oneDNN INT8 on CPU
needs the legacy program.

:func:`legacy_ops` is a context manager, entered only around one legacy trace, that rebinds those
functions (in Paddle's own modules and as ``Variable`` methods) to wrappers which append the legacy op
(``elementwise_mul``, ``matmul_v2``, ``sigmoid``, ...) when called on a legacy ``Variable`` in legacy
static mode and call the original function in every other case. On exit every binding is restored.
Nothing else in the process changes, and dygraph/PIR calls made meanwhile take the original path.

Example:
    >>> import paddle
    >>> from slim_quant.legacy_trace import legacy_ops
    >>> with legacy_ops(), paddle.pir_utils.OldIrGuard():                       # doctest: +SKIP
    ...     paddle.jit.save(model, "out/model", input_spec=[spec])
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["legacy_ops", "LEGACY_OPS"]


def _in_legacy_static(*xs: Any) -> bool:
    import paddle
    from paddle.base.framework import Variable

    return not paddle.in_dynamic_mode() and not paddle.framework.in_pir_mode() and all(isinstance(x, Variable) for x in xs)


def _append(op_type: str, inputs: dict[str, Any], attrs: dict[str, Any], like: Any) -> Any:
    from paddle.base.layer_helper import LayerHelper

    helper = LayerHelper(op_type)
    out = helper.create_variable_for_type_inference(like.dtype)
    helper.append_op(type=op_type, inputs=inputs, outputs={"Out": [out]}, attrs=attrs)
    return out


def _unary(op_type: str, orig: Callable[..., Any]) -> Callable[..., Any]:
    def fn(x: Any, name: Any = None) -> Any:
        if _in_legacy_static(x):
            return _append(op_type, {"X": [x]}, {}, x)
        return orig(x, name=name)

    return fn


def _multiply(orig: Callable[..., Any]) -> Callable[..., Any]:
    def multiply(x: Any, y: Any, name: Any = None) -> Any:
        if _in_legacy_static(x, y):
            return _append("elementwise_mul", {"X": [x], "Y": [y]}, {"axis": -1}, x)
        return orig(x, y, name=name)

    return multiply


def _matmul(orig: Callable[..., Any]) -> Callable[..., Any]:
    def matmul(x: Any, y: Any, transpose_x: bool = False, transpose_y: bool = False, name: Any = None) -> Any:
        if _in_legacy_static(x, y):
            return _append("matmul_v2", {"X": [x], "Y": [y]}, {"trans_x": bool(transpose_x), "trans_y": bool(transpose_y)}, x)
        return orig(x, y, transpose_x=transpose_x, transpose_y=transpose_y, name=name)

    return matmul


def _bmm(orig: Callable[..., Any]) -> Callable[..., Any]:
    def bmm(x: Any, y: Any, name: Any = None) -> Any:
        if _in_legacy_static(x, y):
            return _append("bmm", {"X": [x], "Y": [y]}, {}, x)
        return orig(x, y, name=name)

    return bmm


def _gelu(orig: Callable[..., Any]) -> Callable[..., Any]:
    def gelu(x: Any, approximate: Any = False, name: Any = None) -> Any:
        if _in_legacy_static(x):
            return _append("gelu", {"X": [x]}, {"approximate": approximate in (True, "tanh")}, x)
        return orig(x, approximate=approximate, name=name)

    return gelu


#: function name -> (module holding the reference binding, wrapper factory)
LEGACY_OPS: dict[str, tuple[str, Callable[[Callable[..., Any]], Callable[..., Any]]]] = {
    "multiply": ("paddle", _multiply),
    "matmul": ("paddle", _matmul),
    "bmm": ("paddle", _bmm),
    "tanh": ("paddle", lambda f: _unary("tanh", f)),
    "sqrt": ("paddle", lambda f: _unary("sqrt", f)),
    "exp": ("paddle", lambda f: _unary("exp", f)),
    "sigmoid": ("paddle.nn.functional", lambda f: _unary("sigmoid", f)),
    "gelu": ("paddle.nn.functional", _gelu),
}


@contextlib.contextmanager
def legacy_ops() -> Iterator[list[str]]:
    """Rebind the ``_C_ops``-only functions of :data:`LEGACY_OPS` to legacy-capable wrappers for one trace.

    Every Paddle module attribute and ``Variable`` method bound to the same function object is rebound
    and restored on exit (also on error). Yields the names of the rebound functions.
    """
    from paddle.base.framework import Variable

    saved: list[tuple[Any, str, Any]] = []
    try:
        for name, (home, factory) in LEGACY_OPS.items():
            orig = getattr(sys.modules[home], name, None)
            if orig is None:
                continue
            wrapper = factory(orig)
            wrapper.__name__ = name
            holders = [m for k, m in list(sys.modules.items()) if (k == "paddle" or k.startswith("paddle.")) and m is not None]
            for mod in holders:
                if getattr(mod, name, None) is orig:
                    saved.append((mod, name, orig))
                    setattr(mod, name, wrapper)
            if Variable.__dict__.get(name) is orig:
                saved.append((Variable, name, orig))
                setattr(Variable, name, lambda self, *a, _w=wrapper, **k: _w(self, *a, **k))
        yield sorted({n for _, n, _ in saved})
    finally:
        for holder, name, orig in reversed(saved):
            setattr(holder, name, orig)
