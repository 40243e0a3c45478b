"""Turn what the user passes (Layer, ModelGraph, inference-model path) into a traced graph."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from slim_core import DataError, ModelGraph, require_paddle, trace

__all__ = ["graph_of", "analysed", "normalize_shapes", "is_model_path"]


def is_model_path(model: Any) -> bool:
    return isinstance(model, (str, os.PathLike))


def normalize_shapes(input_shape: Any) -> list[list[int]] | None:
    """``[1, 3, 224, 224]`` or ``[[1, 3, 224, 224], [1, 10]]`` -> list of shapes; validates the numbers."""
    if input_shape is None:
        return None
    if isinstance(input_shape, str):
        input_shape = [int(p) for p in input_shape.replace("x", ",").split(",") if p.strip()]
    shapes = input_shape
    if shapes and all(isinstance(d, int) for d in shapes):
        shapes = [shapes]
    out = []
    for s in shapes:
        if not isinstance(s, (list, tuple)) or not s or not all(isinstance(d, int) for d in s):
            raise DataError(f"input_shape must be a list of ints such as [1, 3, 224, 224] (or a list of such lists), got {input_shape!r}")
        if any(d <= 0 for d in s):
            raise DataError(f"input_shape {list(s)} has a non-positive dimension; every dimension must be known and > 0")
        out.append([int(d) for d in s])
    return out


def graph_of(model: Any, input_shape: Any = None, example_inputs: Any = None) -> ModelGraph:
    """A :class:`ModelGraph` for a Layer, a graph, or an inference-model path (see :func:`analysed`)."""
    return analysed(model, input_shape, example_inputs)[0]


def analysed(model: Any, input_shape: Any = None, example_inputs: Any = None) -> tuple[ModelGraph, int]:
    """``(graph, batch multiplier)`` for a Layer, a graph, or an inference-model path.

    A Layer is traced with the given shapes. An inference model keeps the shapes it
    was saved with; a dynamic batch dim (-1) is analysed per sample and the
    multiplier is the requested batch size (FLOPs scale linearly with the batch).
    A model saved with other dynamic dims (OCR: ``[-1, 3, 48, -1]``) needs ``input_shape``:
    its program's shapes are inferred again for that shape.

    Raises:
        DataError: shapes missing or not fitting the model (dynamic non-batch dims of a saved model without ``input_shape``).
        ModelLoadError: a path that holds no model.
    """
    paddle = require_paddle()
    if isinstance(model, ModelGraph):
        return model, 1
    shapes = normalize_shapes(input_shape)
    if isinstance(model, paddle.nn.Layer):
        if example_inputs is not None:
            return trace(model, example_inputs=example_inputs), 1
        if shapes is None:
            raise DataError("pass input_shape (e.g. [1, 3, 224, 224]) or example_inputs to analyze a Layer")
        return trace(model, input_spec=shapes), 1
    if is_model_path(model):
        graph = ModelGraph.from_inference_model(Path(model))
        if shapes is not None:
            _check_against_feeds(graph, shapes)
        unknown = [list(v.shape) for v in graph.inputs if v.shape is not None and any(d < 0 for d in v.shape[1:])]
        if unknown and shapes is not None:
            # fix the dynamic dims and infer every op's shape again (the batch too: it is given)
            return ModelGraph.from_inference_model(Path(model), input_shapes=shapes), 1
        if unknown:
            raise DataError(
                f"the model at {model} was saved with dynamic non-batch dims {unknown}; FLOPs need static shapes: "
                "give input_shape (CLI: --input-shape), e.g. " + ";".join(",".join("1" if d < 0 else str(d) for d in s) for s in unknown)
            )
        batch = 1
        if shapes is not None and graph.inputs and graph.inputs[0].shape and graph.inputs[0].shape[0] < 0:
            batch = shapes[0][0]
        return graph, batch
    raise DataError(f"expected a paddle.nn.Layer, a ModelGraph or an inference-model path, got {type(model).__name__}")


def _check_against_feeds(graph: ModelGraph, shapes: list[list[int]]) -> None:
    feeds = [v for v in graph.inputs if v.shape is not None]
    if len(feeds) != len(shapes):
        raise DataError(f"the model has {len(feeds)} inputs {[list(v.shape) for v in feeds]} but {len(shapes)} input shapes were given")
    for v, s in zip(feeds, shapes):
        exp = list(v.shape)
        if len(exp) != len(s) or any(e >= 0 and e != d for e, d in zip(exp, s)):
            raise DataError(f"input shape {s} does not match the model input {v.name or ''} with expected shape {exp} (-1 = any)")
