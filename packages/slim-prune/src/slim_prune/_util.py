"""Small shared helpers: example inputs, eval-mode forward, layer-name checks, measurement."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from slim_core import ConfigError, DataError, check_array, require_paddle
from slim_core.registry import closest

__all__ = ["as_inputs", "eval_mode", "forward", "check_layer_names", "measure", "output_shapes"]


def as_inputs(example_inputs: Any) -> list[Any]:
    """A list of paddle Tensors from one tensor/array or a list/tuple of them."""
    paddle = require_paddle()
    if example_inputs is None:
        raise DataError("example_inputs is required: pass a tensor (or a list of tensors) shaped like the model input")
    items = [example_inputs] if isinstance(example_inputs, (paddle.Tensor, np.ndarray)) else list(example_inputs)
    if not items:
        raise DataError("example_inputs is empty")
    out = []
    for i, x in enumerate(items):
        if isinstance(x, np.ndarray):
            x = paddle.to_tensor(x)
        if not isinstance(x, paddle.Tensor):
            raise DataError(f"example input {i} is a {type(x).__name__}; expected a paddle.Tensor or numpy array")
        check_array(np.asarray(x.numpy()), f"example_inputs[{i}]")  # NaN/inf would score channels on garbage
        out.append(x)
    return out


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Eval mode inside the block (BN statistics must not move while we measure)."""
    was = bool(model.training)
    model.eval()
    try:
        yield
    finally:
        if was:
            model.train()


def forward(model: Any, inputs: Sequence[Any]) -> Any:
    paddle = require_paddle()
    with eval_mode(model), paddle.no_grad():
        return model(*inputs)


def output_shapes(out: Any) -> list[list[int]]:
    if isinstance(out, (list, tuple)):
        return [s for o in out for s in output_shapes(o)]
    if isinstance(out, dict):
        return [s for o in out.values() for s in output_shapes(o)]
    return [list(out.shape)] if hasattr(out, "shape") else []


def check_layer_names(model: Any, names: Sequence[str], what: str) -> None:
    """Raise ConfigError naming the first name that is not a sublayer of ``model``."""
    known = [n for n, _ in model.named_sublayers() if n]
    known_set = set(known)
    for name in names:
        if name not in known_set:
            hint = closest(name, known)
            did = f" (did you mean {hint!r}?)" if hint else ""
            raise ConfigError(f"{what}: model has no layer named {name!r}{did}")


def measure(model: Any, graph: Any) -> tuple[float, int]:
    """``(FLOPs, params)`` by slim_analysis: FLOPs of the traced ``graph``, params of ``model``."""
    import slim_analysis

    return float(slim_analysis.flops(graph)), int(slim_analysis.params(model))
