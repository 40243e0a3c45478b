"""FLOPs and parameter counts from the model graph.

Definition (stated once, used everywhere in slim): **one FLOP is one
multiply-accumulate (MAC)** for convolutions, linear layers and matmuls, as in
``paddle.flops`` and most model-zoo tables ("ResNet-50: 4.1 GFLOPs"). Other ops
count elementwise work: bias and residual adds 1 per output element, batch/layer/
group/instance norm 2 per element (scale and shift; statistics are not counted),
activations other than ReLU/ReLU6 1 per element, softmax 3 per element, pooling
one per element of every window, comparisons/selects 1 per element, reductions
1 per input element, interpolation 2/4/8/16 per output element (linear/bilinear/
trilinear/bicubic), RoI align 4 per sampling point. ReLU, ReLU6, dropout, reshapes,
concat, slices, expand/tile, nearest interpolation and other data movement count 0.
An op with no counter is listed by name (``FlopCount.unknown_ops``,
``ModelSummary.unknown_ops``), never silently counted as 0.
Multiply by two for "FLOPs = 2 x MACs".

ONNX models (a ``.onnx`` file, or a directory whose only model is one, such as an INT8 QDQ
export) are counted by the same counters, registered under ``onnx.<OpType>``: the graph's
shapes come from ONNX shape inference with the input dims fixed by ``input_shape``;
``QuantizeLinear``/``DequantizeLinear`` count 0 (an INT8 model has the FLOPs of its float
source). Needs the ``onnx`` package (``slim-analysis[onnx]``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from slim_analysis._model import analysed, is_model_path, normalize_shapes
from slim_core import DataError, ModelGraph, ModelLoadError, Registry, require_paddle
from slim_core.extras import require
from slim_core.graph import Node
from slim_core.graph.ir import Value

__all__ = [
    "FLOP_COUNTERS",
    "FlopCount",
    "register_flops",
    "node_flops",
    "unknown_ops",
    "counted_nodes",
    "loop_flops",
    "flops",
    "params",
    "onnx_nodes",
    "onnx_model_file",
]

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
        "pd_op.while",
        "pd_op.if",
        "cf.yield",
        "cf.condition_yield",
        "cf.tuple_push",
        "cf.tuple_pop",
        "cf.stack_create",
        "pd_op.cast",
        "pd_op.assign",
        "pd_op.slice",
        "pd_op.gather",
        "pd_op.embedding",
        "builtin.combine",
        "builtin.split",
        "pd_op.expand",
        "pd_op.expand_as",
        "pd_op.broadcast_to",
        "pd_op.tile",
        "pd_op.strided_slice",
        "pd_op.index_select",
        "pd_op.gather_nd",
        "pd_op.take_along_axis",
        "pd_op.stack",
        "pd_op.unstack",
        "pd_op.unbind",
        "pd_op.pad",
        "pd_op.pad3d",
        "pd_op.roll",
        "pd_op.flip",
        "pd_op.nearest_interp",
        "pd_op.one_hot",
        "pd_op.arange",
        "pd_op.full_like",
        "pd_op.full_with_tensor",
        "pd_op.zeros_like",
        "pd_op.ones_like",
        "pd_op.assign_value",
        "pd_op.assign_value_",
        "pd_op.contiguous",
        "pd_op.share_data",
        "pd_op.memcpy_h2d",
        "pd_op.memcpy_d2h",
        "pd_op.view_shape",
        "pd_op.meshgrid",
        "pd_op.increment",
        "pd_op.increment_",
        "pd_op.assign_out_",
        "pd_op.shadow_output",
        "pd_op.unsqueeze_",
        "pd_op.squeeze_",
        "pd_op.reshape_",
        "pd_op.flatten_",
        "pd_op.transpose_",
        "pd_op.relu_",
        "pd_op.relu6_",
        "pd_op.pixel_shuffle",
        "pd_op.pixel_unshuffle",
        "pd_op.channel_shuffle",
        "pd_op.logical_not",
        "pd_op.logical_and",
        "pd_op.logical_or",
        "pd_op.logical_xor",
        "pd_op.tril",
        "pd_op.triu",
        "pd_op.nonzero",
        "pd_op.select_input",
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
    "pd_op.hard_swish",
    "pd_op.hardtanh",
    "pd_op.selu",
    "pd_op.celu",
    "pd_op.softplus",
    "pd_op.softsign",
    "pd_op.logsigmoid",
    "pd_op.log",
    "pd_op.rsqrt",
    "pd_op.square",
    "pd_op.abs",
    "pd_op.pow",
    "pd_op.elementwise_pow",
    "pd_op.remainder",
    "pd_op.floor_divide",
    "pd_op.floor",
    "pd_op.ceil",
    "pd_op.round",
    "pd_op.sign",
    "pd_op.erf",
    "pd_op.sin",
    "pd_op.cos",
    "pd_op.reciprocal",
    "pd_op.tanh_shrink",
    "pd_op.thresholded_relu",
    "pd_op.where",
    "pd_op.equal",
    "pd_op.not_equal",
    "pd_op.greater_than",
    "pd_op.greater_equal",
    "pd_op.less_than",
    "pd_op.less_equal",
    "pd_op.isnan",
    "pd_op.isinf",
    "pd_op.swiglu",
)
def _elementwise(node: Node) -> int:
    return _numel(node.output.shape)


_INTERP = {"pd_op.linear_interp": 2, "pd_op.bilinear_interp": 4, "pd_op.trilinear_interp": 8, "pd_op.bicubic_interp": 16}


@register_flops(*_INTERP)
def _interp(node: Node) -> int:
    return _INTERP[node.type] * _numel(node.output.shape)


@register_flops("pd_op.roi_align")
def _roi_align(node: Node) -> int:
    ratio = int(node.attrs.get("sampling_ratio", -1) or -1)
    points = ratio * ratio if ratio > 0 else 4  # adaptive sampling: about 2x2 points per bin on small RoIs
    return _numel(node.output.shape) * (4 * points + 1)


@register_flops("pd_op.roi_pool", "pd_op.psroi_pool")
def _roi_pool(node: Node) -> int:
    return _numel(node.output.shape)  # one comparison per output at least; the bin size depends on the RoI


@register_flops("pd_op.log_softmax")
def _log_softmax(node: Node) -> int:
    return 3 * _numel(node.output.shape)


@register_flops("pd_op.bmm")
def _bmm(node: Node) -> int:
    return _numel(node.output.shape) * max(int(node.inputs[0].shape[-1]), 1)


@register_flops("pd_op.p_norm", "pd_op.squared_l2_norm")
def _p_norm(node: Node) -> int:
    return 2 * _numel(node.inputs[0].shape)


@register_flops("pd_op.batch_norm", "pd_op.batch_norm_", "pd_op.layer_norm", "pd_op.group_norm", "pd_op.instance_norm")
def _norm(node: Node) -> int:
    return 2 * _numel(node.inputs[0].shape)


@register_flops("pd_op.softmax")
def _softmax(node: Node) -> int:
    return 3 * _numel(node.output.shape)


@register_flops("pd_op.pool2d", "pd_op.pool3d", "pd_op.max_pool2d_with_index")
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


@register_flops(
    "pd_op.mean",
    "pd_op.sum",
    "pd_op.max",
    "pd_op.min",
    "pd_op.amax",
    "pd_op.amin",
    "pd_op.prod",
    "pd_op.logsumexp",
    "pd_op.argmax",
    "pd_op.argmin",
    "pd_op.cumsum",
    "pd_op.topk",
    "pd_op.any",
    "pd_op.all",
)
def _reduce(node: Node) -> int:
    return _numel(node.inputs[0].shape)


# ONNX op types, counted by the counters above (the node shapes come from ONNX shape inference)
_ONNX_ELEMENTWISE = (
    "Add Sub Mul Div Max Min Sum Mean Sigmoid HardSigmoid HardSwish Tanh Erf Sqrt Pow Exp Log Abs Neg Reciprocal "
    "LeakyRelu Elu PRelu Selu Celu Softplus Softsign Mish Gelu Clip Where Equal Greater GreaterOrEqual Less LessOrEqual "
    "Floor Ceil Round Sign Sin Cos IsNaN IsInf ThresholdedRelu"
).split()
ZERO_FLOP_ONNX_OPS = frozenset(
    "onnx." + t
    for t in (
        "Relu Reshape Transpose Concat Split Slice Squeeze Unsqueeze Flatten Shape Size Gather GatherElements GatherND "
        "ScatterND Cast CastLike Identity Constant ConstantOfShape Expand Tile Pad QuantizeLinear DequantizeLinear "
        "Dropout Range NonZero Not And Or Xor DepthToSpace SpaceToDepth Trilu OneHot"
    ).split()
)
register_flops(*(f"onnx.{t}" for t in _ONNX_ELEMENTWISE))(_elementwise)
register_flops("onnx.Conv")(_conv)
register_flops("onnx.ConvTranspose")(_conv_t)
register_flops("onnx.MatMul")(_matmul)
register_flops("onnx.Softmax", "onnx.LogSoftmax")(_softmax)
register_flops("onnx.BatchNormalization", "onnx.LayerNormalization", "onnx.InstanceNormalization", "onnx.GroupNormalization")(_norm)
register_flops(
    *(
        f"onnx.{t}"
        for t in "ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL2 ReduceLogSumExp ArgMax ArgMin CumSum TopK".split()
    ),
    "onnx.GlobalAveragePool",
    "onnx.GlobalMaxPool",
)(_reduce)


@register_flops("onnx.Gemm")
def _gemm(node: Node) -> int:
    a, out = node.inputs[0], _numel(node.output.shape)
    k = a.shape[0] if node.attrs.get("transA") else a.shape[-1]
    return out * max(int(k), 1) + (out if len(node.inputs) > 2 and node.inputs[2] is not None else 0)  # the bias add


@register_flops("onnx.MaxPool", "onnx.AveragePool", "onnx.LpPool")
def _onnx_pool(node: Node) -> int:
    return _numel(node.output.shape) * _numel(node.attrs.get("kernel_shape") or [1])


_ONNX_COMPUTE = ("onnx.Conv", "onnx.ConvTranspose", "onnx.MatMul", "onnx.Gemm")


def onnx_model_file(path: Any) -> Path | None:
    """The ``.onnx`` file that ``path`` names: the file itself, or a directory's only model when it is an ONNX one
    (``model.onnx`` when there are several); None when ``path`` holds a Paddle inference model (counted from its program)."""
    p = Path(path)
    if p.suffix == ".onnx":
        return p if p.is_file() else None
    if not p.is_dir():
        return None
    from slim_core.model_io import resolve_model_path

    try:
        resolve_model_path(p)
        return None
    except ModelLoadError:
        pass
    files = sorted(p.glob("*.onnx"))
    if len(files) == 1:
        return files[0]
    return p / "model.onnx" if (p / "model.onnx").is_file() else None


def onnx_nodes(path: Any, input_shape: Any = None) -> list[Node]:
    """The nodes of an ONNX model as :class:`slim_core.graph.Node` (type ``onnx.<OpType>``) with inferred static shapes.

    Args:
        path: the ``.onnx`` file.
        input_shape: shapes of the graph inputs (e.g. ``[1, 3, 48, 320]``); needed when the model has dynamic dims
            other than the batch (a dynamic batch alone counts as 1).

    Raises:
        DataError: shapes missing or not fitting the inputs, or a Conv/MatMul/Gemm whose shape stays unknown.
        MissingExtraError: the ``onnx`` package is not installed.
    """
    onnx = require("onnx", package="slim-analysis", extra="onnx", what="counting the FLOPs of an ONNX model")
    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    _constants_as_initializers(g)
    inits = {i.name: tuple(int(d) for d in i.dims) for i in g.initializer}
    feeds = [i for i in g.input if i.name not in inits]
    shapes = normalize_shapes(input_shape)
    if shapes is not None and len(shapes) != len(feeds):
        raise DataError(f"the ONNX model has {len(feeds)} inputs but {len(shapes)} input shapes were given")
    for k, feed in enumerate(feeds):
        dims = feed.type.tensor_type.shape.dim
        want = shapes[k] if shapes is not None else None
        now = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
        if want is None:
            if any(d < 0 for d in now[1:]):
                raise DataError(f"ONNX input {feed.name!r} has dynamic dims {now}; FLOPs need static shapes: give input_shape")
            want = [1 if now and now[0] < 0 else now[0], *now[1:]]
        if len(want) != len(now) or any(e >= 0 and e != w for e, w in zip(now, want)):
            raise DataError(f"input shape {list(want)} does not match the ONNX input {feed.name!r} with shape {now} (-1 = any)")
        for d, w in zip(dims, want):
            d.dim_value = int(w)  # replaces a dim_param (the oneof)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # onnx raises its own InferenceError types
        raise DataError(f"ONNX shape inference failed on {path}: {str(exc).strip().splitlines()[0][:200]}") from exc
    known: dict[str, tuple[int, ...]] = dict(inits)
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if vi.type.tensor_type.HasField("shape"):
            known[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
    missing = [
        t
        for n in inferred.graph.node
        if f"onnx.{n.op_type}" in FLOP_COUNTERS
        for t in [*n.input[:2], *n.output[:1]]
        if t and -1 in known.get(t, (-1,))
    ]
    if missing:  # shapes computed at run time (Shape -> Slice -> Concat -> Reshape): run the model once on zeros
        known.update(_run_shapes(model, missing, [[int(d.dim_value) for d in f.type.tensor_type.shape.dim] for f in feeds]))
    values: dict[str, Value] = {}

    def value(name: str) -> Value | None:
        if not name:
            return None
        if name not in values:
            values[name] = Value(len(values), known.get(name), None, name=name)
        return values[name]

    nodes = []
    for k, n in enumerate(inferred.graph.node):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute if a.type != onnx.AttributeProto.GRAPH}
        node = Node(k, f"onnx.{n.op_type}", attrs, [value(i) for i in n.input], list(n.input), [value(o) for o in n.output])
        if node.type in _ONNX_COMPUTE and any(
            v is None or v.shape is None or -1 in v.shape for v in (node.inputs[0], node.inputs[1], node.output)
        ):
            raise DataError(
                f"{n.op_type} {n.name or k} of {Path(path).name} has no static shape after ONNX shape inference; give input_shape"
            )
        nodes.append(node)
    return nodes


def _run_shapes(model: Any, names: list[str], feed_shapes: list[list[int]]) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors ``names`` from one ONNX Runtime run of ``model`` on zeros (graph optimizations off)."""
    import numpy as np

    onnx = require("onnx", package="slim-analysis", extra="onnx")
    ort = require("onnxruntime", package="slim-analysis", extra="onnx", what="shapes that ONNX shape inference leaves open")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outs = {o.name for o in probe.graph.output}
    names = list(dict.fromkeys(t for t in names if t not in {i.name for i in probe.graph.initializer}))
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in names if t not in outs)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3  # not the unused-initializer warnings of paddle2onnx's files
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feeds = {}
        for i, shape in zip(sess.get_inputs(), feed_shapes):
            dtype = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32"}.get(i.type, "float32")
            feeds[i.name] = np.zeros(shape, dtype)
        values = sess.run(names, feeds)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
        raise DataError(f"the ONNX model cannot run on the input shapes {feed_shapes}: {str(exc).strip().splitlines()[0][:200]}") from exc
    return {t: tuple(int(d) for d in np.shape(v)) for t, v in zip(names, values)}


def _constants_as_initializers(g: Any) -> None:
    """``Constant`` nodes (and ``Identity`` copies of constants, as paddle2onnx writes them) become initializers,
    so shape inference sees the values of the shape operands of ``Reshape`` (it does not propagate through them)."""
    tensors = {i.name: i for i in g.initializer}
    keep = []
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            src = n.attribute[0].t
        elif n.op_type == "Identity" and n.input[0] in tensors:
            src = tensors[n.input[0]]
        else:
            keep.append(n)
            continue
        t = type(src)()
        t.CopyFrom(src)
        t.name = n.output[0]
        g.initializer.append(t)
        tensors[t.name] = t
    del g.node[:]
    g.node.extend(keep)


def _onnx_params(path: Path) -> int:
    """Elements of the float and 8-bit initializers (constants included), without the scales and zero points that only QuantizeLinear/DequantizeLinear read."""
    onnx = require("onnx", package="slim-analysis", extra="onnx", what="counting the parameters of an ONNX model")
    g = onnx.load(str(path), load_external_data=False).graph
    _constants_as_initializers(g)
    qdq_only: dict[str, bool] = {}
    for n in g.node:
        for k, i in enumerate(n.input):
            qdq_only[i] = qdq_only.get(i, True) and n.op_type in ("QuantizeLinear", "DequantizeLinear") and k > 0
    weights = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    # float and 8-bit tensors: the int64 shape operands of Reshape/Slice are not parameters
    return sum(int(math.prod(i.dims)) for i in g.initializer if i.data_type in weights and not qdq_only.get(i.name, False))


def _base_type(t: str) -> str:
    """``pd_op.relu_`` (in place) -> ``pd_op.relu``."""
    return t[:-1] if t.endswith("_") and not t.endswith("__") else t


def node_flops(node: Node) -> int:
    """FLOPs (MACs) of one node; 0 for data movement and unknown ops (see :func:`unknown_ops`)."""
    fn = FLOP_COUNTERS.get(node.type, None) or FLOP_COUNTERS.get(_base_type(node.type), None)
    if fn is None:
        return 0
    return int(fn(node))


def _trips_of(node: Node, loop_trips: Any) -> int:
    if node.type != "pd_op.while":
        return 1
    if isinstance(loop_trips, dict):
        return int(loop_trips.get(node.index, loop_trips.get(f"pd_op.while#{node.index}", 1)))
    return int(loop_trips) if loop_trips else 1


def counted_nodes(graph: ModelGraph, loop_trips: Any = None) -> list[tuple[Node, int]]:
    """``(node, multiplier)`` for every op, sub-block ops included.

    A ``while`` body counts ``loop_trips`` times (an int for every loop, or ``{node index: trips}``;
    default 1, i.e. per iteration); both branches of an ``if`` count once.
    """
    out: list[tuple[Node, int]] = []

    def add(n: Node, mult: int) -> None:
        out.append((n, mult))
        inner = mult * _trips_of(n, loop_trips)
        for b in graph.body(n):
            add(b, inner)

    for n in graph.nodes:
        add(n, 1)
    return out


def loop_flops(graph: ModelGraph) -> dict[str, int]:
    """``{"pd_op.while#<index>": FLOPs of one iteration of its body}`` (nested loops counted once per iteration)."""
    out = {}
    for n in graph.all_nodes():
        if n.type == "pd_op.while":
            sub = ModelGraph(graph.body(n), [], [], [], {}, graph.source, sub_nodes=graph.sub_nodes)
            out[f"pd_op.while#{n.index}"] = sum(node_flops(b) * m for b, m in counted_nodes(sub))
    return out


def unknown_ops(graph: ModelGraph) -> dict[str, int]:
    """Op types in ``graph`` (loop bodies included) that have no FLOPs counter and are not known to be free."""
    return _unknown(graph.all_nodes())


def _unknown(nodes: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in nodes:
        t = n.type
        if any(x in FLOP_COUNTERS or x in ZERO_FLOP_OPS or x in ZERO_FLOP_ONNX_OPS for x in (t, _base_type(t))):
            continue
        out[t] = out.get(t, 0) + 1
    return out


class FlopCount(int):
    """The FLOPs as an ``int``, with ``unknown_ops``: ``{op type: count}`` of ops no counter knows
    (counted as 0, so the total is a lower bound when it is not empty), and ``loops``:
    ``{"pd_op.while#<index>": FLOPs of one iteration}`` of the control-flow loops."""

    unknown_ops: dict[str, int]
    loops: dict[str, int]

    def __new__(cls, value: int, unknown: dict[str, int] | None = None, loops: dict[str, int] | None = None) -> FlopCount:
        obj = super().__new__(cls, value)
        obj.unknown_ops = dict(unknown or {})
        obj.loops = dict(loops or {})
        return obj


def flops(model: Any, input_shape: Any = None, *, example_inputs: Any = None, loop_trips: Any = None) -> FlopCount:
    """Count the FLOPs of one forward pass (1 FLOP = 1 multiply-accumulate; see the module docs).

    Args:
        model: a ``paddle.nn.Layer``, a :class:`slim_core.ModelGraph`, an inference-model path, or an
            ONNX model (a ``.onnx`` file or a directory holding one, see :func:`onnx_model_file`).
        input_shape: ``[1, 3, 224, 224]`` (or a list of shapes for several inputs); the batch
            size counts, so use 1 for per-image numbers.
        example_inputs: tensors instead of ``input_shape``.
        loop_trips: iterations of ``while`` loops (an int for all, or ``{node index: trips}``); a loop
            body counts once (per iteration) when not given.

    Returns:
        The FLOPs as a :class:`FlopCount` (an int whose ``unknown_ops`` names the ops without a counter).

    Raises:
        DataError: no or a wrong input shape (the message names the expected shape).

    Example:
        >>> import paddle, slim_analysis
        >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3, bias_attr=False))
        >>> slim_analysis.flops(net, [1, 3, 10, 10])   # 8*8*8 outputs x 27 MACs
        13824
    """
    onnx_file = onnx_model_file(model) if is_model_path(model) else None
    if onnx_file is not None:
        nodes = onnx_nodes(onnx_file, input_shape)
        return FlopCount(sum(node_flops(n) for n in nodes), _unknown(nodes))
    g, batch = analysed(model, input_shape, example_inputs)
    total = sum(node_flops(n) * m for n, m in counted_nodes(g, loop_trips))
    return FlopCount(batch * total, unknown_ops(g), {k: batch * v for k, v in loop_flops(g).items()})


def params(model: Any, *, trainable_only: bool = False) -> int:
    """Number of parameter elements.

    Args:
        model: a Layer (each shared parameter counted once; BatchNorm running statistics are
            parameters in Paddle and count unless ``trainable_only``), a ModelGraph, or an
            inference-model path (every persistable weight in the program), or an ONNX model (every
            initializer element but the scales and zero points of quantize/dequantize nodes).
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
    onnx_file = onnx_model_file(model) if g is None and is_model_path(model) else None
    if onnx_file is not None:
        return _onnx_params(onnx_file)
    if g is None and is_model_path(model):
        g = ModelGraph.from_inference_model(model)
    if g is None:
        raise DataError(f"expected a paddle.nn.Layer, a ModelGraph or an inference-model path, got {type(model).__name__}")
    return sum(_numel(p.shape) for p in g.params.values())
