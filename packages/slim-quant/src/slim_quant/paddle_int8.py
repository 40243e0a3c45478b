"""Rewrite a legacy Paddle inference program into the INT8 form oneDNN runs.

Paddle Inference on CPU runs INT8 only from the legacy ProgramDesc, through its
``quant_dequant_mkldnn_pass`` that reads ``quantize_linear``/``dequantize_linear``
pairs (the layout Paddle's own static PTQ writes with ``onnx_format=True``):

- each quantized weight is stored as **int8** in the parameter file and read by
  a ``dequantize_linear`` (per output channel, ``quant_axis`` 0 for conv filters,
  1 for ``[in, out]`` matmul weights);
- each quantized op input gets a ``quantize_linear`` + ``dequantize_linear``
  pair holding the activation threshold;
- other activations between quantized ops get an observer pair
  (``only_observer=True``) so oneDNN knows their ranges and keeps pool, add,
  concat and activations in INT8 instead of converting back to float.

Thresholds follow Paddle's convention: ``@scale`` holds the clipping value
(abs-max like), the integer step is ``threshold / 127``.

This module is the INT8 export path shared by PTQ and QAT: both hand
:func:`rewrite_program` the program, a :class:`~slim_quant.graph_passes.QuantPlan`
(per-weight int8 codes) and per-tensor thresholds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from slim_core.errors import DataError
from slim_quant.calibrators import Calibrator
from slim_quant.graph_passes import (
    ActQuant,
    Capabilities,
    QuantPlan,
    Site,
    activation_quant,
    constant_tensors,
    float_activations,
    fold_affine,
    insert_quantization,
    place_activation_qdq,
)
from slim_quant.graph_passes import find_sites as shared_find_sites

__all__ = [
    "QuantSite",
    "find_sites",
    "activation_vars",
    "CONTROL_FLOW_OPS",
    "float_blocks",
    "constant_vars",
    "fold_affine_blocks",
    "calibrate_program",
    "rewrite_program",
    "QUANT_OP_SLOTS",
    "signed_residual_relus_to_leaky",
]

#: op type -> (activation input slot, weight input slot)
QUANT_OP_SLOTS: dict[str, tuple[str, str]] = {
    "conv2d": ("Input", "Filter"),
    "depthwise_conv2d": ("Input", "Filter"),
    "conv2d_transpose": ("Input", "Filter"),
    "matmul_v2": ("X", "Y"),
    "matmul": ("X", "Y"),
    "mul": ("X", "Y"),
}
_SKIP_OUT_SLOTS = {"XShape", "SavedMean", "SavedVariance", "MeanOut", "VarianceOut", "ReserveSpace", "Mask"}
_NO_OBSERVER_OPS = {"feed", "fetch", "quantize_linear", "dequantize_linear", "shape", "fill_constant", "assign_value"}
#: ops whose output gets no recorded scale: oneDNN's INT8 concat assumes every input has the output's scale
#: (no requantization), so a ShuffleNetV2 drifted 29% and a DenseNet121 9% from FP32; kept float they are 3-4%
_FLOAT_OUTPUT_OPS = {"concat"}
#: ops oneDNN fuses into the conv / fc that produces their input (BN, activations; bias adds are checked apart)
_FUSED_INTO_PRODUCER = {
    "batch_norm", "relu", "relu6", "leaky_relu", "hard_swish", "swish", "gelu",
    "sigmoid", "hard_sigmoid", "tanh", "clip", "abs", "sqrt", "mish",
}  # fmt: skip
_CONV_OPS = {"conv2d", "depthwise_conv2d"}
_WEIGHT_KINDS = {
    "conv2d": "conv",
    "depthwise_conv2d": "conv",
    "conv2d_transpose": "conv_transpose",
    "matmul_v2": "matmul",
    "matmul": "matmul",
    "mul": "matmul",
}


@dataclass
class QuantSite:
    """One quantizable op of a legacy program."""

    op_index: int
    op_type: str
    act: str
    weight: str
    axis: int


class _LegacyIR:
    """:class:`slim_quant.graph_passes.GraphIR` over a legacy program (block 0), for Paddle Inference's oneDNN INT8.

    A conv's bias is the ``elementwise_add(conv, bias, axis=1)`` after it with a 1-D parameter: the form oneDNN's
    conv + bias fusion recognises. Paddle 3 exports a dygraph conv bias as ``elementwise_add(conv, reshape2(bias))``;
    that add is the conv's bias slot too, and :meth:`store` rewrites it into the classic form (without it the bias
    add stays a separate op after every INT8 convolution and a MobileNetV2 ran slower than FP32).
    """

    _KINDS = {"elementwise_mul": "mul", "elementwise_add": "add"}
    capabilities = Capabilities(fold_batch_norm=False, pair_feeds_all_int8_consumers=False, activation_codes="s8")

    def __init__(self, program: Any, scope: Any, keep: set[str], sites: set[int] | None = None) -> None:
        self.block, self.scope, self.keep = program.global_block(), scope, keep
        self.pers = {v.name for v in program.list_vars() if v.persistable}
        self.bias_add: dict[int, Any] = {}
        self.reshaped: dict[int, tuple[Any, str, int]] = {}  # bias add -> (its reshape2, the 1-D parameter, axis)
        self.sites = sites or set()  # ids of the quantized ops
        self.quantized_weights: dict[str, str] = {}  # weight -> its dequantized var
        self.after: dict[int, int] = {}  # producer -> ops of observer pairs inserted after it

    def _consumers(self, var: str) -> list[Any]:
        return [op for op in self.block.ops if var in op.input_arg_names]

    def _uses(self, var: str) -> int:
        return sum(op.input_arg_names.count(var) for op in self.block.ops)

    def _producer(self, var: str) -> Any:
        return next((op for op in self.block.ops if var in op.output_arg_names), None)

    def _value(self, name: str) -> np.ndarray:
        return np.array(self.scope.find_var(name).get_tensor(), dtype="float64")

    def _param_1d(self, name: str, size: int) -> bool:
        return name in self.pers and list(self.block.var(name).shape) == [size] and self._uses(name) == 1

    def _scalar(self, op: Any, var: str) -> np.ndarray | None:
        """The size-1 parameter of ``op`` = ``elementwise_{mul,add}(var, param)`` (mul also ``(param, var)``)."""
        if op is None or op.type not in self._KINDS:
            return None
        xs, ys = op.input("X"), op.input("Y")
        other = ys[0] if xs == [var] else (xs[0] if ys == [var] and op.type == "elementwise_mul" else None)
        if other is None or other not in self.pers or int(np.prod(self.block.var(other).shape)) != 1 or self._uses(other) != 1:
            return None
        return self._value(other).reshape(-1)

    def _reshaped_bias(self, add: Any, size: int) -> tuple[Any, str, int] | None:
        """``(reshape2, parameter, axis)`` when ``add``'s ``Y`` is a reshape of a 1-D parameter along one axis."""
        (y,) = add.input("Y")
        op = self._producer(y)
        if op is None or op.type not in ("reshape2", "reshape") or op.input("Shape") or op.input("ShapeTensor"):
            return None
        (src,) = op.input("X")
        nonunit = [k for k, d in enumerate(op.attr("shape")) if d != 1]
        if not self._param_1d(src, size) or len(nonunit) != 1 or self._uses(y) != 1:
            return None
        return op, src, nonunit[0]

    def convs(self) -> list[Any]:
        return [op for op in self.block.ops if op.type in _CONV_OPS or op.type == "conv2d_transpose"]

    def conv_params(self, conv: Any) -> tuple[np.ndarray, np.ndarray] | None:
        wname = conv.input("Filter")[0]
        if wname not in self.pers:
            return None
        shape = self.block.var(wname).shape
        size = shape[0] if conv.type != "conv2d_transpose" else shape[1] * conv.attr("groups")
        cons = self._consumers(conv.output("Output")[0])
        add = cons[0] if len(cons) == 1 else None
        if add is None or add.type != "elementwise_add" or add.input("X") != conv.output("Output"):
            return None
        if self._param_1d(add.input("Y")[0], size):
            self.bias_add[id(conv)] = add
            return self._value(wname), self._value(add.input("Y")[0])
        reshaped = self._reshaped_bias(add, size)
        if reshaped is None:
            return None
        self.reshaped[id(add)] = reshaped  # the bias slot once absorbed: affine_consumer reports it first
        return self._value(wname), np.zeros(size)

    def frozen(self, conv: Any) -> bool:
        w = conv.input("Filter")[0]
        return conv.type == "conv2d_transpose" or w in self.keep or self._uses(w) != 1

    def conv_out(self, conv: Any) -> str:
        add = self.bias_add.get(id(conv))
        return add.output("Out")[0] if add is not None else conv.output("Output")[0]

    def conv_in(self, conv: Any) -> str:
        return conv.input("Input")[0]

    def unpadded(self, conv: Any) -> bool:
        pads = list(conv.attr("paddings")) if conv.has_attr("paddings") else [1]
        return not any(pads) and conv.attr("padding_algorithm") != "SAME"

    def affine_consumer(self, t: str) -> tuple[Any, str, np.ndarray] | None:
        cons = self._consumers(t)
        if len(cons) != 1:
            return None
        op = cons[0]
        if id(op) in self.reshaped:
            return op, "add", self._value(self.reshaped[id(op)][1])
        if op.type == "batch_norm" and op.input("X") == [t]:
            names = [op.input(k)[0] for k in ("Scale", "Bias", "Mean", "Variance")]
            if not all(n in self.pers for n in names):
                return None
            gamma, beta, mean, var = (self._value(n).reshape(-1) for n in names)
            return op, "batch_norm", np.stack([gamma, beta, mean, var + op.attr("epsilon")])
        c = self._scalar(op, t)
        return (op, self._KINDS[op.type], c) if c is not None else None

    def affine_producer(self, t: str) -> tuple[Any, str, np.ndarray, str] | None:
        op = self._producer(t)
        if op is None or op.type not in self._KINDS or self._uses(t) != 1:
            return None
        x = op.input("X")[0]
        if op.type == "elementwise_mul" and x in self.pers:
            x = op.input("Y")[0]
        c = self._scalar(op, x)
        return (op, self._KINDS[op.type], c, x) if c is not None else None

    def absorb(self, conv: Any, node: Any) -> None:
        if id(conv) not in self.bias_add:  # the reshaped bias add becomes the conv's bias slot
            self.bias_add[id(conv)] = node
            return
        add = self.bias_add[id(conv)]
        add._rename_output(add.output("Out")[0], node.output("Out")[0])
        self.block._remove_op(list(self.block.ops).index(node))

    def bypass_input(self, conv: Any, nodes: list[Any], src: str) -> None:
        conv._rename_input(conv.input("Input")[0], src)
        for op in nodes:
            self.block._remove_op(list(self.block.ops).index(op))

    def store(self, conv: Any, w: np.ndarray, b: np.ndarray) -> None:
        if not self.frozen(conv):
            _set_tensor(self.scope, conv.input("Filter")[0], w.astype("float32"))
        add = self.bias_add[id(conv)]
        if id(add) in self.reshaped:  # elementwise_add(x, reshape2(bias)) -> elementwise_add(x, bias, axis)
            reshape, src, axis = self.reshaped.pop(id(add))
            add._rename_input(add.input("Y")[0], src)
            add._set_attr("axis", axis)
            self.block._remove_op(list(self.block.ops).index(reshape))
        _set_tensor(self.scope, add.input("Y")[0], b.astype("float32"))

    # GraphIR: what oneDNN's INT8 passes can run, read by graph_passes.find_sites / place_activation_qdq
    def nodes(self) -> list[Any]:
        return list(self.block.ops)

    def weight_kind(self, node: Any) -> str | None:
        return _WEIGHT_KINDS.get(node.type)

    def site_operands(self, node: Any) -> tuple[str, str] | None:
        slots = QUANT_OP_SLOTS.get(node.type)
        acts, ws = (node.input(slots[0]), node.input(slots[1])) if slots else ([], [])
        return (acts[0], ws[0]) if len(acts) == 1 and len(ws) == 1 else None

    def weight_transposed(self, node: Any) -> bool:
        return bool((node.type == "matmul_v2" and node.attr("trans_y")) or (node.type == "matmul" and node.attr("transpose_Y")))

    def is_const(self, t: str) -> bool:
        return t in self.pers

    def const_shape(self, t: str) -> list[int]:
        return list(self.block.var(t).shape)

    def const_value(self, t: str) -> np.ndarray:
        return np.array(self.scope.find_var(t).get_tensor())

    def constants(self) -> list[str]:
        return sorted(self.pers)

    def makes_constant(self, node: Any) -> bool:
        return node.type in ("fill_constant", "assign_value")

    def opaque(self, node: Any) -> bool:
        return node.type in ("feed", "fetch") or node.type in CONTROL_FLOW_OPS

    def is_float(self, t: str) -> bool:
        if not self.block.has_var(t):
            return False
        var = self.block.var(t)
        return not var.persistable and str(var.dtype) in ("paddle.float32", "VarType.FP32")

    def op_type(self, node: Any) -> str:
        return node.type

    def quantize_weight(self, site: Site, codes: np.ndarray, thresholds: np.ndarray, act: ActQuant | None) -> None:
        """int8 codes in the parameter itself, read by a ``dequantize_linear`` right before the op (Paddle's layout)."""
        op, w, block = site.node, site.weight, self.block
        if w not in self.quantized_weights:
            _set_tensor(self.scope, w, codes)
            wsname, wzname, dq = f"{w}@scale", f"{w}.quantized.dequantized@zero_point", f"{w}.quantized.dequantized"
            _new_var(block, wsname, [thresholds.size], "float32", True)
            _new_var(block, wzname, [thresholds.size], "int32", True)
            _set_tensor(self.scope, wsname, thresholds)
            _set_tensor(self.scope, wzname, np.zeros([thresholds.size], "int32"))
            _new_var(block, dq, list(block.var(w).shape), "float32", False)
            block._insert_op(
                list(block.ops).index(op),
                type="dequantize_linear",
                inputs={"X": [w], "Scale": [wsname], "ZeroPoint": [wzname]},
                outputs={"Y": [dq]},
                attrs={"quant_axis": site.axis, "bit_length": 8},
            )
            self.quantized_weights[w] = dq
        op._rename_input(w, self.quantized_weights[w])

    def insert_qdq(self, t: str, readers: list[Any], q: ActQuant) -> None:
        """A quantized op's input pair right before that op (one per op: Paddle's pass reads it as the op's input
        scale); an observer pair (``only_observer``) right after the producer, read by every consumer."""
        ops = list(self.block.ops)
        if not q.observer:
            for op in readers:
                op._rename_input(t, _insert_pair(self.block, self.scope, list(self.block.ops).index(op), t, q.threshold, False))
            return
        prod = self.producer(t)
        at = ops.index(prod) + 1 + self.after.get(id(prod), 0)
        dq = _insert_pair(self.block, self.scope, at, t, q.threshold, True)
        for c in readers:
            c._rename_input(t, dq)
        self.after[id(prod)] = self.after.get(id(prod), 0) + 2

    def graph_inputs(self) -> list[str]:
        return []  # a feed op writes them, and oneDNN takes no scale from it

    def outputs(self, node: Any) -> list[str]:
        return [v for slot in node.output_names if slot not in _SKIP_OUT_SLOTS for v in node.output(slot)]

    def producer(self, t: str) -> Any | None:
        return self._producer(t)

    def consumers(self, t: str) -> list[Any]:
        return self._consumers(t)

    def is_graph_output(self, t: str) -> bool:
        return any(op.type == "fetch" and t in op.input("X") for op in self.block.ops)

    def shape_only(self, node: Any) -> bool:
        return node.type == "shape"

    def int8_input(self, node: Any) -> bool:
        # a conv/matmul kept in float (or an activation x activation matmul: attention) would still run in INT8
        # from its neighbours' observer scales
        return not _no_int8_kernel(node) and (node.type not in QUANT_OP_SLOTS or id(node) in self.sites)

    def int8_output(self, node: Any) -> bool:
        return node.type not in _NO_OBSERVER_OPS and node.type not in _FLOAT_OUTPUT_OPS and self.int8_input(node)

    def same_scale(self, node: Any) -> bool:
        return False  # oneDNN's compute_propagate_scales_mkldnn_pass carries scales through reshapes and pooling itself

    def node_inputs(self, node: Any) -> list[str]:
        return list(node.input_arg_names)

    def fused_into_producer(self, node: Any) -> bool:
        # an intermediate of a chain oneDNN fuses (conv -> bias -> BN -> act): its scale must not be recorded;
        # oneDNN then takes it for the fused output and ResNet18 INT8 drifts 27% from FP32
        return node.type in _FUSED_INTO_PRODUCER or _is_bias_add(node, self.pers)


def fold_affine_blocks(program: Any, scope: Any, keep: set[str]) -> int:
    """:func:`slim_quant.graph_passes.fold_affine` on a legacy program: conv biases in the form oneDNN fuses,
    affine blocks folded (filters in ``keep``, int8 codes computed elsewhere, are not rescaled). Returns the convs
    changed."""
    done = fold_affine(_LegacyIR(program, scope, keep))
    if done:
        program._sync_with_cpp()
    return done


def find_sites(program: Any) -> list[QuantSite]:
    """Ops of block 0 with a float activation input and a persistable 2-D/4-D weight
    (:func:`slim_quant.graph_passes.find_sites` on the program; oneDNN has no INT8 deconvolution)."""
    ops = list(program.global_block().ops)
    index = {id(op): i for i, op in enumerate(ops)}
    return [QuantSite(index[id(s.node)], s.node.type, s.act, s.weight, s.axis) for s in shared_find_sites(_LegacyIR(program, None, set()))]


def constant_vars(program: Any) -> set[str]:
    """Non-persistable vars computed only from parameters (e.g. a conv bias reshaped for broadcasting), and the
    parameters (:func:`slim_quant.graph_passes.constant_tensors`).

    They are constants the runtime folds (conv + bias fusion); observing them would make oneDNN treat the
    bias add as an INT8 elementwise op instead of fusing it into the convolution.
    """
    return constant_tensors(_LegacyIR(program, None, set()))


def _no_int8_kernel(op: Any) -> bool:
    """Ops oneDNN would pick for INT8 from the recorded scales but has no INT8 kernel for.

    Adaptive pool2d (``nn.AdaptiveAvgPool2D`` to a size other than 1) fails at run time with
    "There are no kernels which are registered in the pool2d operator" once its input or
    output carries a scale, so neither side is observed and it stays in float.
    """
    if op.type != "pool2d" or not op.has_attr("adaptive") or not op.attr("adaptive"):
        return False
    size = list(op.attr("ksize")) if op.has_attr("ksize") else []
    return size != [1, 1]


def _is_bias_add(op: Any, persistable: set[str]) -> bool:
    return op.type == "elementwise_add" and any(v in persistable for v in op.input_arg_names)


def _conv_chain_output(var: str, producer: dict[str, Any], persistable: set[str]) -> bool:
    """``var`` comes out of a conv through only what oneDNN fuses into it (bias add, BN)."""
    op = producer.get(var)
    while op is not None and (_is_bias_add(op, persistable) or op.type == "batch_norm"):
        src = op.input("X")[0]
        op = producer.get(src)
    return op is not None and op.type in _CONV_OPS


def signed_residual_relus_to_leaky(program: Any, non_negative: set[str]) -> int:
    """Turn ``relu`` after a residual add whose residual input is signed into ``leaky_relu(alpha=0)``; returns how many.

    oneDNN fuses ``relu(conv(x) + residual)`` into one INT8 conv whose output type follows the residual's
    (s8 when it holds negative values, as a projection shortcut does) while Paddle still computes the output
    scale for the u8 range a fused ReLU implies: every value above half the threshold saturated, and a
    ResNet18 ran 23-27% away from FP32 (Paddle's own static PTQ does the same). A ``leaky_relu`` with slope 0
    computes the same function, but oneDNN treats its output as signed, so type and scale agree. Its output
    then counts as signed for the blocks after it. The float program is unchanged in value.
    """
    block = program.global_block()
    persistable = {v.name for v in program.list_vars() if v.persistable}
    producer = {o: op for op in block.ops for o in op.output_arg_names}
    signed_out: set[str] = set()
    done = 0
    for op in list(block.ops):
        if op.type != "relu":
            continue
        add = producer.get(op.input("X")[0])
        if add is None or add.type != "elementwise_add" or _is_bias_add(add, persistable):
            continue
        ins = add.input("X") + add.input("Y")
        from_conv = [_conv_chain_output(v, producer, persistable) for v in ins]
        # oneDNN fuses one conv branch and reads the other input as the residual
        residual = [v for v, c in zip(ins, from_conv) if not c] or ins
        if not any(v in signed_out or v not in non_negative for v in residual):
            continue
        x, out = op.input("X")[0], op.output("Out")[0]
        idx = list(block.ops).index(op)
        block._insert_op(idx, type="leaky_relu", inputs={"X": [x]}, outputs={"Out": [out]}, attrs={"alpha": 0.0})
        block._remove_op(idx + 1)
        producer[out] = block.ops[idx]  # the removed relu's wrapper must not be touched again
        signed_out.add(out)
        done += 1
    if done:
        program._sync_with_cpp()
    return done


CONTROL_FLOW_OPS = ("while", "conditional_block", "select_input", "select_output", "recurrent")
"""Legacy ops that own a sub-block: the ops inside stay float (see :func:`float_blocks`)."""


def float_blocks(program: Any) -> dict[str, str]:
    """``{"<op type> (block <i>)": reason}`` for each control-flow sub-block left in float."""
    out = {}
    for op in program.global_block().ops:
        if op.type in CONTROL_FLOW_OPS and op.has_attr("sub_block"):
            idx = op._block_attr_id("sub_block")
            n = len(program.block(idx).ops)
            out[f"{op.type} (block {idx})"] = (
                f"{n} ops inside a {op.type} loop/branch are kept in float: calibration observes block 0 only "
                "and oneDNN INT8 passes do not rewrite sub-blocks"
            )
    return out


def activation_vars(program: Any) -> list[str]:
    """Float activations of block 0 worth a threshold (:func:`slim_quant.graph_passes.float_activations`): op inputs
    and outputs that are not parameters nor computed from them; a loop body stays float (find_sites reads block 0
    only), its carried vars are not observed."""
    return float_activations(_LegacyIR(program, None, set()))


def calibrate_program(
    run: Callable[[dict[str, np.ndarray], list[str]], list[np.ndarray]],
    batches: Iterable[dict[str, np.ndarray]],
    names: list[str],
    make: Callable[[], Calibrator],
) -> dict[str, Calibrator]:
    """Run the float program on every batch and feed each named activation to its own calibrator."""
    cals = {n: make() for n in names}
    seen = 0
    for feed in batches:
        outs = run(feed, names)
        for n, arr in zip(names, outs):
            cals[n].observe(np.asarray(arr))
        seen += 1
    if seen == 0:
        raise DataError("calibration data is empty: no batch was produced")
    return cals


def _set_tensor(scope: Any, name: str, value: np.ndarray) -> None:
    import paddle

    scope.var(name).get_tensor().set(value, paddle.CPUPlace())


def _new_var(block: Any, name: str, shape: list[int], dtype: str, persistable: bool) -> Any:
    return block.create_var(name=name, shape=shape, dtype=dtype, persistable=persistable)


def _insert_pair(block: Any, scope: Any, at: int, var: str, thr: float, observer: bool) -> str:
    """``quantize_linear`` + ``dequantize_linear`` of ``var`` with threshold ``thr`` at op index ``at``; returns the
    dequantized var (its ``@scale`` / zero point are shared by every pair of ``var``)."""
    sname, zname = f"{var}@scale", f"{var}.quantized@zero_point"
    if not block.has_var(sname):
        _new_var(block, sname, [1], "float32", True)
        _new_var(block, zname, [1], "int32", True)
    _set_tensor(scope, sname, np.array([thr], "float32"))
    _set_tensor(scope, zname, np.zeros([1], "int32"))
    src = block.var(var)
    qname, dqname = f"{var}.quantized", f"{var}.quantized.dequantized"
    _new_var(block, qname, list(src.shape), "float32", False)
    _new_var(block, dqname, list(src.shape), "float32", False)
    attrs: dict[str, Any] = {"quant_axis": -1, "bit_length": 8}
    if observer:
        attrs["only_observer"] = True
    block._insert_op(
        at, type="quantize_linear", inputs={"X": [var], "Scale": [sname], "ZeroPoint": [zname]}, outputs={"Y": [qname]}, attrs=attrs
    )
    block._insert_op(
        at + 1,
        type="dequantize_linear",
        inputs={"X": [qname], "Scale": [sname], "ZeroPoint": [zname]},
        outputs={"Y": [dqname]},
        attrs=dict(attrs),
    )
    return dqname


def rewrite_program(
    program: Any,
    scope: Any,
    sites: list[QuantSite],
    act_thresholds: dict[str, float],
    *,
    plan: QuantPlan | None = None,
    observer_thresholds: dict[str, float] | None = None,
    non_negative: set[str] | None = None,
) -> dict[str, Any]:
    """Insert quantize/dequantize ops into ``program`` in place and store int8 weights in ``scope``.

    Args:
        program: a legacy ``Program`` (loaded under ``OldIrGuard``).
        scope: the scope holding its parameters.
        sites: the ops to quantize (from :func:`find_sites`, filtered by the caller).
        act_thresholds: clipping threshold for each quantized op's activation input.
        plan: the int8 weights (:meth:`QuantPlan.int8_weight`: codes computed elsewhere, or per channel here).
        observer_thresholds: thresholds of other activations (observer pairs for oneDNN).
        non_negative: activations calibration saw no negative value in (unknown ones count as signed).

    Returns:
        A summary: quantized ops, weights, observed tensors, and how many residual ReLUs became
        ``leaky_relu(alpha=0)`` (see :func:`signed_residual_relus_to_leaky`).
    """
    block = program.global_block()
    plan = plan or QuantPlan()
    observer_thresholds = dict(observer_thresholds or {})
    leaky = signed_residual_relus_to_leaky(program, non_negative or set()) if observer_thresholds else 0
    shared = [Site(block.ops[s.op_index], _WEIGHT_KINDS[s.op_type], s.act, s.weight, s.axis) for s in sites]
    ir = _LegacyIR(program, scope, set(), sites={id(s.node) for s in shared})
    site_inputs: dict[str, list[Any]] = {}
    for s in shared:
        site_inputs.setdefault(s.act, []).append(s.node)
    # observer pairs: activations between INT8 ops that are not already quantized inputs, right after their producer
    placed = place_activation_qdq(ir, site_inputs, set(observer_thresholds))
    caps = ir.capabilities
    quant = {t: activation_quant(caps, float(act_thresholds[t])) for t in site_inputs}
    observed = [t for t in placed if t not in site_inputs]
    quant.update({t: activation_quant(caps, float(observer_thresholds[t]), observer=True) for t in observed})
    done_ops = insert_quantization(ir, plan, shared, placed, quant)
    program._sync_with_cpp()
    return {
        "ops": done_ops,
        "weights": sorted(ir.quantized_weights),
        "activations": sorted(site_inputs),
        "observed": observed,
        "residual_relus_as_leaky": leaky,
    }
