"""Input specifications: one normalized form for shapes, ``InputSpec`` objects and dicts.

Every entry point that traces, times or exports a Layer (``slim_core.trace``,
``slim_deploy.export``, ``slim_analysis.latency``, slim-quant's calibration
tracing, slim-auto) accepts the same loose input spec and turns it into a list of
``paddle.static.InputSpec`` here, with one clear :class:`~slim_core.ConfigError`
for anything malformed. Example tensors or arrays count as specs of their shape and dtype.

Example:
    >>> specs = normalize_input_spec([1, 3, 32, 32])            # doctest: +SKIP
    >>> specs[0].shape, specs[0].name                            # doctest: +SKIP
    ((-1, 3, 32, 32), 'x')
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from slim_core._paddle import require_paddle
from slim_core.errors import ConfigError

__all__ = [
    "InputSpecLike",
    "normalize_input_spec",
    "specs_from_batch",
    "example_inputs",
    "check_spec_matches_forward",
    "spec_to_dicts",
    "specs_from_dicts",
]

InputSpecLike = Any
"""A shape (``[None, 3, 32, 32]``), an ``InputSpec``, a tensor or array (its shape and dtype), a list of
those, or a dict ``{name: shape or InputSpec}``."""

_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")


def _is_shape(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(v is None or isinstance(v, (int, np.integer)) for v in value)


def _dtype_name(dtype: Any) -> str:
    text = str(dtype).replace("paddle.", "")
    return {"VarType.FP32": "float32", "VarType.INT64": "int64", "VarType.INT32": "int32", "VarType.FP16": "float16"}.get(text, text)


def _is_array(paddle: Any, value: Any) -> bool:
    return isinstance(value, (np.ndarray, paddle.Tensor))


def _one(item: Any, name: str, where: str, dynamic_batch: bool) -> Any:
    paddle = require_paddle()
    InputSpec = paddle.static.InputSpec
    dtype = "float32"
    if _is_array(paddle, item):
        shape, dtype = [int(d) for d in item.shape], _dtype_name(item.dtype)
    elif isinstance(item, InputSpec):
        shape = list(item.shape)
        dtype = _dtype_name(item.dtype)
        name = item.name or name
    elif isinstance(item, dict):
        unknown = set(item) - {"shape", "dtype", "name"}
        if unknown or "shape" not in item:
            raise ConfigError(f"{where}: a dict entry needs 'shape' and may have 'dtype' and 'name'; got keys {sorted(item)}")
        shape, dtype, name = item["shape"], item.get("dtype", "float32"), item.get("name", name)
    elif isinstance(item, (list, tuple)) and len(item) == 2 and _is_shape(item[0]) and isinstance(item[1], str):
        shape, dtype = list(item[0]), item[1]
    elif _is_shape(item):
        shape = list(item)
    else:
        raise ConfigError(
            f"{where}: {item!r} is not an input spec; give a shape like [None, 3, 224, 224], "
            "a (shape, dtype) pair, a dict {'shape': ..., 'dtype': ...} or a paddle.static.InputSpec"
        )
    if not _is_shape(shape):
        raise ConfigError(f"{where}: shape {shape!r} must be a non-empty list of positive ints or None")
    dims: list[int | None] = []
    for i, d in enumerate(shape):
        if d is None or d == -1:
            dims.append(None)
        elif int(d) < 1:
            raise ConfigError(f"{where}: dimension {i} of shape {list(shape)} is {d}; use a positive size, or None/-1 for a dynamic one")
        else:
            dims.append(int(d))
    if dynamic_batch:
        dims[0] = None
    dtype = _dtype_name(dtype)
    if dtype not in _DTYPES:
        raise ConfigError(f"{where}: dtype {dtype!r} is not supported; use one of {', '.join(_DTYPES)}")
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{where}: input name {name!r} must be a valid identifier")
    return InputSpec(shape=dims, dtype=dtype, name=name)


def normalize_input_spec(input_spec: InputSpecLike, *, dynamic_batch: bool = True, default_name: str = "x") -> list[Any]:
    """Turn a loose input spec into a list of ``paddle.static.InputSpec``.

    Args:
        input_spec: a shape, an ``InputSpec``, a ``(shape, dtype)`` pair, a list of
            those (one per model input), or a dict ``{name: shape or InputSpec}``.
        dynamic_batch: make the first dimension of every input dynamic (``None``).
        default_name: name of an unnamed single input (several are called ``x0``, ``x1``, ...).

    Returns:
        One ``InputSpec`` per model input.

    Raises:
        ConfigError: the spec is missing, malformed, has non-positive sizes, an
            unknown dtype or duplicate names.
    """
    paddle = require_paddle()
    if input_spec is None or (isinstance(input_spec, (list, tuple, dict)) and len(input_spec) == 0):
        raise ConfigError("input_spec is required: give the input shape(s), e.g. [None, 3, 224, 224]")
    if isinstance(input_spec, dict) and not ({"shape"} <= set(input_spec)):
        items = [(str(k), v) for k, v in input_spec.items()]
        specs = [_one(v, k, f"input_spec[{k!r}]", dynamic_batch) for k, v in items]
        specs = [paddle.static.InputSpec(s.shape, s.dtype, k) for s, (k, _) in zip(specs, items)]
    else:
        single = isinstance(input_spec, (paddle.static.InputSpec, dict)) or _is_array(paddle, input_spec)
        if single or _is_shape(input_spec):
            input_spec = [input_spec]
        elif isinstance(input_spec, tuple) and len(input_spec) == 2 and _is_shape(input_spec[0]) and isinstance(input_spec[1], str):
            input_spec = [input_spec]
        if not isinstance(input_spec, (list, tuple)):
            raise ConfigError(f"input_spec must be a shape, an InputSpec or a list of them, got {type(input_spec).__name__}")
        n = len(input_spec)
        specs = [_one(item, default_name if n == 1 else f"x{i}", f"input_spec[{i}]", dynamic_batch) for i, item in enumerate(input_spec)]
    names = [s.name for s in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"input_spec has duplicate input names: {', '.join(sorted(dup))}")
    return specs


def specs_from_batch(batch: Any, names: Sequence[str] | None = None) -> list[Any]:
    """Specs (dynamic batch) of one data batch: a dict ``{input name: array}`` read in ``names`` order, or a list of arrays.

    Example:
        >>> specs = specs_from_batch({"x": np.zeros((4, 3, 8, 8), "float32")}, ["x"])   # doctest: +SKIP
        >>> list(specs[0].shape)                                                         # doctest: +SKIP
        [-1, 3, 8, 8]
    """
    if isinstance(batch, dict):
        keys = list(names) if names is not None else list(batch)
        return normalize_input_spec({k: np.asarray(batch[k]) if not hasattr(batch[k], "shape") else batch[k] for k in keys})
    return normalize_input_spec(list(batch), default_name=(names[0] if names else "x"))


def check_spec_matches_forward(model: Any, specs: Sequence[Any]) -> None:
    """Raise ConfigError when the number of inputs cannot match ``model.forward``'s signature."""
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):  # builtins or C++ layers have no signature; let tracing decide
        return
    params = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
    required = [p for p in params if p.default is p.empty]
    n = len(specs)
    if n < len(required) or (not varargs and n > len(params)):
        want = f"{len(required)}" if len(required) == len(params) else f"{len(required)} to {len(params)}"
        raise ConfigError(
            f"input_spec describes {n} input(s) but {type(model).__name__}.forward takes {want} "
            f"({', '.join(p.name for p in params) or 'none'})"
        )


def example_inputs(specs: Sequence[Any], batch: int = 2, *, seed: int = 0) -> list[np.ndarray]:
    """Random arrays matching ``specs``; dynamic first dimensions get ``batch``.

    Raises:
        ConfigError: a dimension other than the first is dynamic (the caller must give data).
    """
    rng = np.random.default_rng(seed)
    out = []
    for spec in specs:
        shape = []
        for i, d in enumerate(spec.shape):
            if d is None or d == -1:
                if i != 0:
                    raise ConfigError(
                        f"input {spec.name!r} has a dynamic dimension {i} ({list(spec.shape)}); pass example data instead of relying on random inputs"
                    )
                d = batch
            shape.append(int(d))
        dtype = _dtype_name(spec.dtype)
        if dtype.startswith(("int", "uint")):
            out.append(rng.integers(0, 2, size=shape).astype(dtype))
        elif dtype == "bool":
            out.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            out.append(rng.standard_normal(shape).astype("float32" if dtype == "bfloat16" else dtype))
    return out


def spec_to_dicts(specs: Sequence[Any]) -> list[dict[str, Any]]:
    """JSON-ready ``[{name, shape, dtype}]`` (dynamic sizes as -1)."""
    return [{"name": s.name, "shape": [-1 if d is None else int(d) for d in s.shape], "dtype": _dtype_name(s.dtype)} for s in specs]


def specs_from_dicts(items: Sequence[dict[str, Any]]) -> list[Any]:
    """The inverse of :func:`spec_to_dicts` (a manifest's ``inputs`` back to ``InputSpec``; -1 is dynamic)."""
    return normalize_input_spec(
        {str(i["name"]): {"shape": list(i["shape"]), "dtype": i.get("dtype", "float32")} for i in items}, dynamic_batch=False
    )
