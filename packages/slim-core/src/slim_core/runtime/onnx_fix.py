"""Repairs of paddle2onnx output that ONNX Runtime refuses.

paddle2onnx 2.1 builds the target shape of a ``reshape`` from PIR's ``builtin.combine`` of scalars as a
``Concat`` whose inputs mix rank-0 and rank-1 tensors (``pd_op.full`` constants next to a squeezed slice of
``Shape``). ONNX Runtime rejects such a model ("All inputs to Concat must have same rank"): the PP-OCRv4
recognizer and the PP-OCR direction classifier both came out unloadable. :func:`fix_concat_ranks` puts an
``Unsqueeze`` (axis 0) on each rank-0 input of such a ``Concat``, which is what the concatenation of
scalars means.

Example:
    >>> import onnx                                                       # doctest: +SKIP
    >>> model = onnx.load("m.onnx"); fix_concat_ranks(model)              # doctest: +SKIP
    5
"""

from __future__ import annotations

from typing import Any

__all__ = ["fix_concat_ranks"]


def fix_concat_ranks(model: Any) -> int:
    """Make every ``Concat`` whose inputs mix rank 0 and rank 1 concatenate rank-1 tensors; returns how many were fixed."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    rank = {i.name: len(i.dims) for i in model.graph.initializer}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if v.type.tensor_type.HasField("shape"):
            rank[v.name] = len(v.type.tensor_type.shape.dim)
    fixed = 0
    axes = "slim_fix_unsqueeze_axes_0"
    for node in list(model.graph.node):
        if node.op_type != "Concat":
            continue
        ranks = [rank.get(i) for i in node.input]
        if 0 not in ranks or 1 not in ranks:
            continue
        if not any(i.name == axes for i in model.graph.initializer):
            model.graph.initializer.append(numpy_helper.from_array(np.array([0], "int64"), axes))
        at = list(model.graph.node).index(node)
        for k, name in enumerate(list(node.input)):
            if rank.get(name) == 0:
                unsq = helper.make_node("Unsqueeze", [name, axes], [f"{name}.{node.name}.as_1d"], name=f"{node.name}.unsqueeze{k}")
                model.graph.node.insert(at, unsq)
                at += 1
                node.input[k] = unsq.output[0]
        fixed += 1
    return fixed
