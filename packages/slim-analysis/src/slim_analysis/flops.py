"""FLOPs and parameter counts from the model graph.

Definition (stated once, used everywhere in slim): **one FLOP is one
multiply-accumulate (MAC)** for convolutions, linear layers and matmuls, as in
``paddle.flops`` and most model-zoo tables ("ResNet-50: 4.1 GFLOPs"). Other ops
count elementwise work: bias and residual adds 1 per output element, batch/layer/
group/instance norm 2 per element (scale and shift; statistics are not counted),
activations other than ReLU/ReLU6 1 per element, softmax 3 per element, pooling
one per element of every window. ReLU, ReLU6, dropout, reshapes, concat and
other data movement count 0. Multiply by two for "FLOPs = 2 x MACs".
"""

from __future__ import annotations

import math
from typing import Any

from slim_analysis._model import analysed, is_model_path
from slim_core import ModelGraph, Registry, require_paddle
from slim_core.graph import Node

__all__ = ["FLOP_COUNTERS", "register_flops", "node_flops", "unknown_ops", "flops", "params"]

FLOP_COUNTERS = Registry("FLOPs counter")
"""``{op type: counter(node) -> int}``. Register your own with :func:`register_flops`."""

ZERO_FLOP_OPS = frozenset(
    {
        "pd_op.relu",
        "pd_op.relu6",
        "pd_op.dropout",
        "pd_op.reshape",
        "pd_op.flatten",
        "pd_op.squeeze",
        "pd_op.unsqueeze",
        "pd_op.transpose",
        "pd_op.concat",
        "pd_op.split",
        "pd_op.split_with_num",
        "pd_op.full",
        "pd_op.full_int_array",
        "pd_op.data",
        "pd_op.feed",
        "pd_op.fetch",
        "pd_op.shape",
        "pd_op.shape64",
        "pd_op.cast",
        "pd_op.assign",
        "pd_op.slice",
        "pd_op.gather",
        "pd_op.embedding",
        "builtin.combine",
        "builtin.split",
    }
)


def register_flops(*op_types: str, overwrite: bool = False) -> Any:
    """Decorator registering ``counter(node) -> int`` for op types."""

    def deco(fn: Any) -> Any:
        for t in op_types:
            FLOP_COUNTERS.register(t, overwrite=overwrite)(fn)
        return fn

    return deco


def _numel(shape: Any) -> int:
    return int(math.prod(max(int(d), 1) for d in shape)) if shape is not None else 0


@register_flops("pd_op.conv2d", "pd_op.conv1d", "pd_op.conv3d", "pd_op.depthwise_conv2d")
def _conv(node: Node) -> int:
    w = node.inputs[1]
    per_out = _numel(w.shape[1:])  # in_channels / groups x kernel: the filter's shape already says it
    return _numel(node.output.shape) * per_out


@register_flops("pd_op.conv2d_transpose", "pd_op.depthwise_conv2d_transpose", "pd_op.conv3d_transpose")
def _conv_t(node: Node) -> int:
    x, w = node.inputs[0], node.inputs[1]
    # every input element is multiplied into out_channels/groups * kernel outputs
    return _numel(x.shape) * _numel(w.shape[1:])


@register_flops("pd_op.matmul")
def _matmul(node: Node) -> int:
    x = node.inputs[0]
    k = x.shape[-2] if node.attrs.get("transpose_x", False) else x.shape[-1]
    return _numel(node.output.shape) * max(int(k), 1)


@register_flops(
    "pd_op.add",
    "pd_op.subtract",
    "pd_op.multiply",
    "pd_op.divide",
    "pd_op.maximum",
    "pd_op.minimum",
    "pd_op.scale",
    "pd_op.sigmoid",
    "pd_op.hardsigmoid",
    "pd_op.hardswish",
    "pd_op.swish",
    "pd_op.silu",
    "pd_op.tanh",
    "pd_op.gelu",
    "pd_op.leaky_relu",
    "pd_op.elu",
    "pd_op.prelu",
    "pd_op.mish",
    "pd_op.exp",
    "pd_op.sqrt",
    "pd_op.clip",
)
def _elementwise(node: Node) -> int:
    return _numel(node.output.shape)


@register_flops("pd_op.batch_norm", "pd_op.batch_norm_", "pd_op.layer_norm", "pd_op.group_norm", "pd_op.instance_norm")
def _norm(node: Node) -> int:
    return 2 * _numel(node.inputs[0].shape)


@register_flops("pd_op.softmax")
def _softmax(node: Node) -> int:
    return 3 * _numel(node.output.shape)


@register_flops("pd_op.pool2d", "pd_op.pool3d")
def _pool(node: Node) -> int:
    x, out = node.inputs[0], node.output
    if node.attrs.get("global_pooling") or node.attrs.get("adaptive"):
        sp_in, sp_out = _numel(x.shape[2:]), _numel(out.shape[2:])
        window = max(sp_in // max(sp_out, 1), 1)
        # adaptive average: adds over the window plus one division (as paddle.flops counts it)
        return _numel(out.shape) * (window + (1 if node.attrs.get("pooling_type") == "avg" else 0))
    from slim_core.graph.rules import const_value

    ks = const_value(node.inputs[1]) if len(node.inputs) > 1 else node.attrs.get("kernel_size")
    window = _numel(ks) if isinstance(ks, list) else 1
    return _numel(out.shape) * window


@register_flops("pd_op.mean", "pd_op.sum")
def _reduce(node: Node) -> int:
    return _numel(node.inputs[0].shape)


def node_flops(node: Node) -> int:
    """FLOPs (MACs) of one node; 0 for data movement and unknown ops (see :func:`unknown_ops`)."""
    fn = FLOP_COUNTERS.get(node.type, None)
    if fn is None:
        return 0
    return int(fn(node))


def unknown_ops(graph: ModelGraph) -> dict[str, int]:
    """Op types in ``graph`` that have no FLOPs counter and are not known to be free."""
    out: dict[str, int] = {}
    for n in graph.nodes:
        if n.type not in FLOP_COUNTERS and n.type not in ZERO_FLOP_OPS:
            out[n.type] = out.get(n.type, 0) + 1
    return out


def flops(model: Any, input_shape: Any = None, *, example_inputs: Any = None) -> int:
    """Count the FLOPs of one forward pass (1 FLOP = 1 multiply-accumulate; see the module docs).

    Args:
        model: a ``paddle.nn.Layer``, a :class:`slim_core.ModelGraph`, or an inference-model path.
        input_shape: ``[1, 3, 224, 224]`` (or a list of shapes for several inputs); the batch
            size counts, so use 1 for per-image numbers.
        example_inputs: tensors instead of ``input_shape``.

    Returns:
        The FLOPs as an int.

    Raises:
        DataError: no or a wrong input shape (the message names the expected shape).

    Example:
        >>> import paddle, slim_analysis
        >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3, bias_attr=False))
        >>> slim_analysis.flops(net, [1, 3, 10, 10])   # 8*8*8 outputs x 27 MACs
        13824
    """
    g, batch = analysed(model, input_shape, example_inputs)
    return batch * sum(node_flops(n) for n in g.nodes)


def params(model: Any, *, trainable_only: bool = False) -> int:
    """Number of parameter elements.

    Args:
        model: a Layer (each shared parameter counted once; BatchNorm running statistics are
            parameters in Paddle and count unless ``trainable_only``), a ModelGraph, or an
            inference-model path (every persistable weight in the program).
        trainable_only: count only trainable parameters (Layer only).

    Example:
        >>> import paddle, slim_analysis
        >>> slim_analysis.params(paddle.nn.Linear(4, 3))
        15
    """
    paddle = require_paddle()
    if isinstance(model, paddle.nn.Layer):
        seen: set[int] = set()
        total = 0
        for p in model.parameters():
            if id(p) in seen or (trainable_only and (p.stop_gradient or not getattr(p, "trainable", True))):
                continue
            seen.add(id(p))
            total += _numel(p.shape)
        return total
    g = model if isinstance(model, ModelGraph) else None
    if g is None and is_model_path(model):
        g = ModelGraph.from_inference_model(model)
    if g is None:
        from slim_core import DataError

        raise DataError(f"expected a paddle.nn.Layer, a ModelGraph or an inference-model path, got {type(model).__name__}")
    return sum(_numel(p.shape) for p in g.params.values())
