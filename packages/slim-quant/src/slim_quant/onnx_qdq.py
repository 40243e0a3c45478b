"""ONNX QDQ export: our calibrated INT8 quantization as QuantizeLinear/DequantizeLinear nodes.

paddle2onnx refuses quantized Paddle programs, so the float model is converted
first and the quantization is inserted with the ``onnx`` library:

1. clean-up: ``Constant`` weights become initializers, a conv bias added through
   ``Reshape`` + ``Add`` becomes the conv's bias input, ``BatchNormalization``
   after a conv is folded into it; for OpenVINO (``target_runtime="openvino"``) ``x * HardSigmoid(x)``
   becomes ``HardSwish(x)``;
2. every float activation is calibrated on ONNX Runtime with our calibrators;
3. ``Conv``/``MatMul``/``Gemm`` weights become **int8** initializers (per output
   channel, symmetric) read through ``DequantizeLinear``; conv biases become int32;
4. activations get ``QuantizeLinear``/``DequantizeLinear`` pairs with **u8**
   codes (zero point 0 for non-negative tensors, 128 otherwise), placed by the
   graph: on the inputs of quantized ops and on tensors that flow only between
   quantized ops, ``Add``, ``Concat`` and pooling, so ONNX Runtime fuses them into
   ``QLinearConv``/``QLinearAdd``/... and stays in INT8; for ONNX Runtime (the default
   ``QuantPlan.target_runtime``) also on the output of every quantized op, which OpenVINO
   does not need where that output is read in float (``target_runtime="openvino"``);
5. a ``Relu`` or ``Clip(0, c)`` right after a quantized op is removed: the u8
   code with zero point 0 (and threshold <= c) clamps exactly as the activation did.

Control flow (``Loop``/``If``/``Scan``, e.g. paddle2onnx's form of a ``while`` op): the ops inside
a subgraph are neither calibrated nor quantized and stay float (the reason is returned in
``float_blocks``); the outer tensors a subgraph reads count as inputs of its node, so the
clean-up keeps them and the rest of the model is quantized around it.

Needs the ``onnx`` extra (``onnx``, ``onnxruntime``, ``paddle2onnx``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slim_core.errors import ExportError
from slim_quant.calibrators import Calibrator
from slim_quant.graph_passes import (
    ActQuant,
    Capabilities,
    QuantPlan,
    Site,
    activation_quant,
    find_sites,
    float_activations,
    fold_affine,
    input_thresholds,
    insert_quantization,
    place_activation_qdq,
    share_scales,
)

__all__ = ["quantize_onnx_from_paddle", "quantize_onnx_model", "COMPUTE_OPS", "PASS_OPS", "SAME_SCALE_OPS", "float_blocks"]

COMPUTE_OPS = ("Conv", "MatMul", "Gemm")
#: ops that ONNX Runtime runs in INT8 when their inputs and outputs carry QDQ
PASS_OPS = ("Add", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "Reshape", "Flatten", "Transpose")
#: ops whose INT8 form only moves or selects values: ONNX Runtime runs them in INT8 only when the
#: input and output QDQ carry the same scale and zero point, so they share one
SAME_SCALE_OPS = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze")
_SHAPE_ONLY = ("Shape",)
_WEIGHT_KINDS = {"Conv": "conv", "ConvTranspose": "conv_transpose", "MatMul": "matmul", "Gemm": "matmul"}


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ExportError("ONNX export needs the onnx extra: pip install 'slim-quant[onnx]'") from exc
    return onnx, onnxruntime


def _subgraphs(node: Any) -> list[Any]:
    """The graphs held in ``node``'s attributes (a ``Loop`` body, an ``If``'s branches)."""
    return [a.g for a in node.attribute if a.HasField("g")] + [g for a in node.attribute for g in a.graphs]


def _free_names(graph: Any) -> list[str]:
    """The outer-scope names ``graph`` reads: referenced in it (or deeper) and defined neither by its inputs,
    initializers nor nodes (a subgraph input may shadow an outer name; paddle2onnx's ``Loop`` bodies do)."""
    local = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    return [r for r in dict.fromkeys(i for n in graph.node for i in _node_inputs(n)) if r and r not in local]


def _node_inputs(node: Any) -> list[str]:
    """``node``'s inputs and the outer tensors its subgraphs read (implicit inputs of ``Loop``/``If``/``Scan``)."""
    subs = _subgraphs(node)
    if not subs:
        return list(node.input)
    implicit = [r for g in subs for r in _free_names(g)]
    return list(node.input) + [r for r in dict.fromkeys(implicit) if r not in node.input]


def _count_nodes(graph: Any) -> int:
    return sum(1 + sum(_count_nodes(g) for g in _subgraphs(n)) for n in graph.node)


def float_blocks(model: Any) -> dict[str, str]:
    """``{"<op type> (<node name>)": reason}`` for each control-flow node of ``model``'s graph, whose subgraph stays float.

    Example:
        >>> float_blocks(onnx.load("model.onnx"))   # doctest: +SKIP
        {'Loop (Loop.0)': '19 ops inside the Loop subgraph are kept in float: ...'}
    """
    out = {}
    for n in model.graph.node:
        subs = _subgraphs(n)
        if subs:
            k = sum(_count_nodes(g) for g in subs)
            out[f"{n.op_type} ({n.name or n.output[0]})"] = (
                f"{k} ops inside the {n.op_type} subgraph are kept in float: calibration observes the main graph only "
                "and QDQ is inserted there only"
            )
    return out


class _Graph:
    """Index of an ONNX graph: producers, consumers, initializers."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.model = model
        self.g = model.graph
        self.inits = {i.name: numpy_helper.to_array(i) for i in self.g.initializer}
        self.reindex()

    def reindex(self) -> None:
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.g.node:
            for o in n.output:
                self.producer[o] = n
            for i in _node_inputs(n):
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in self.g.output}

    def set_init(self, name: str, value: np.ndarray) -> None:
        from onnx import numpy_helper

        for i, init in enumerate(self.g.initializer):
            if init.name == name:
                del self.g.initializer[i]
                break
        self.g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        self.inits[name] = np.asarray(value)

    def drop_init(self, name: str) -> None:
        for i, init in enumerate(self.g.initializer):
            if init.name == name:
                del self.g.initializer[i]
                break
        self.inits.pop(name, None)

    def remove(self, node: Any) -> None:
        self.g.node.remove(node)


def _constants_to_initializers(gr: _Graph) -> None:
    from onnx import numpy_helper

    for n in list(gr.g.node):
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            gr.set_init(n.output[0], numpy_helper.to_array(n.attribute[0].t))
            gr.remove(n)
    gr.reindex()


def _drop_identities(gr: _Graph) -> int:
    """Remove the ``Identity`` nodes paddle2onnx writes after many PIR ops (they hide conv -> bias -> act chains)."""
    done = 0
    for n in list(gr.g.node):
        if n.op_type != "Identity" or len(n.input) != 1:
            continue
        src, dst = n.input[0], n.output[0]
        if dst in gr.outputs:
            prod = gr.producer.get(src)
            if prod is None or src in gr.outputs or len(gr.consumers.get(src, [])) != 1:
                continue
            prod.output[list(prod.output).index(src)] = dst
        else:
            _rename_input(gr, dst, src)
        gr.remove(n)
        gr.reindex()
        done += 1
    return done


def _rename_input(gr: _Graph, old: str, new: str) -> None:
    _rename_in(gr.g, old, new)


def _rename_in(graph: Any, old: str, new: str) -> None:
    """Rename the uses of ``old`` in ``graph`` and in the subgraphs that do not shadow it."""
    for n in graph.node:
        for k, v in enumerate(n.input):
            if v == old:
                n.input[k] = new
        for g in _subgraphs(n):
            if old in _free_names(g):
                _rename_in(g, old, new)


def _const_value(gr: _Graph, t: str) -> np.ndarray | None:
    """The value of ``t`` when it is an initializer, or a ``Reshape``/``Unsqueeze`` of one (a bias shaped to broadcast)."""
    if t in gr.inits:
        return gr.inits[t]
    node = gr.producer.get(t)
    if node is None or node.op_type not in ("Reshape", "Unsqueeze") or node.input[0] not in gr.inits:
        return None
    x = gr.inits[node.input[0]]
    if node.op_type == "Reshape":
        shape = gr.inits.get(node.input[1]) if len(node.input) > 1 else None
        if shape is None:
            return None
        dims = [x.shape[i] if d == 0 and i < x.ndim else int(d) for i, d in enumerate(shape.reshape(-1))]
        return x.reshape(dims)
    axes = gr.inits.get(node.input[1]).reshape(-1) if len(node.input) > 1 and node.input[1] in gr.inits else None
    if axes is None:
        axes = next((list(at.ints) for at in node.attribute if at.name == "axes"), None)
    if axes is None:
        return None
    rank = x.ndim + len(axes)
    for ax in sorted(int(a) % rank for a in axes):
        x = np.expand_dims(x, ax)
    return x


def _const_operand(gr: _Graph, node: Any, t: str) -> np.ndarray | None:
    """The constant operand of a binary ``node`` whose other input is ``t`` (None when there is none)."""
    other = [i for i in node.input if i != t]
    return _const_value(gr, other[0]) if len(node.input) == 2 and len(other) == 1 else None


def _sole_use(gr: _Graph, t: str) -> Any | None:
    cons = gr.consumers.get(t, [])
    return cons[0] if len(cons) == 1 and t not in gr.outputs else None


class _OnnxIR:
    """:class:`slim_quant.graph_passes.GraphIR` over an ONNX graph (``Conv``/``ConvTranspose`` with the bias as input 2),
    for ONNX Runtime's QDQ fusions (``int8_nodes``: the quantized ops and the :data:`PASS_OPS` it runs in INT8)."""

    _KINDS = {"Mul": "mul", "Add": "add"}
    capabilities = Capabilities(fold_batch_norm=True)

    def __init__(self, gr: _Graph, keep: set[str], int8_nodes: set[int] | None = None) -> None:
        self.gr, self.keep = gr, keep
        self.int8_nodes = int8_nodes or set()
        self.pending: list[tuple[Any, list[Any]]] = []  # (anchor node, nodes to insert before it)
        self._types: dict[str, bool] | None = None

    def _uses(self, name: str) -> int:
        return sum(_node_inputs(n).count(name) for n in self.gr.g.node)

    def convs(self) -> list[Any]:
        return [n for n in self.gr.g.node if n.op_type in ("Conv", "ConvTranspose")]

    def conv_params(self, conv: Any) -> tuple[np.ndarray, np.ndarray] | None:
        gr = self.gr
        wname = conv.input[1]
        if wname not in gr.inits:
            return None
        w = gr.inits[wname].astype("float64")
        if len(conv.input) > 2 and conv.input[2]:
            if conv.input[2] not in gr.inits:
                return None
            return w, gr.inits[conv.input[2]].astype("float64").reshape(-1)
        group = next((a.i for a in conv.attribute if a.name == "group"), 1)
        return w, np.zeros(w.shape[0] if conv.op_type == "Conv" else w.shape[1] * group)

    def frozen(self, conv: Any) -> bool:
        return conv.op_type != "Conv" or conv.input[1] in self.keep or self._uses(conv.input[1]) != 1

    def conv_out(self, conv: Any) -> str:
        return conv.output[0]

    def conv_in(self, conv: Any) -> str:
        return conv.input[0]

    def unpadded(self, conv: Any) -> bool:
        pads = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [])
        auto = next((a.s for a in conv.attribute if a.name == "auto_pad"), b"NOTSET")
        return not any(pads) and auto in (b"NOTSET", b"VALID")

    def affine_consumer(self, t: str) -> tuple[Any, str, np.ndarray] | None:
        gr = self.gr
        node = _sole_use(gr, t)
        if node is not None and node.op_type == "BatchNormalization" and node.input[0] == t and len(node.output) == 1:
            params = [gr.inits.get(i) for i in node.input[1:5]]
            if any(p is None for p in params):
                return None
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            gamma, beta, mean, var = (p.astype("float64").reshape(-1) for p in params)
            return node, "batch_norm", np.stack([gamma, beta, mean, var + eps])
        if node is None or node.op_type not in self._KINDS:
            return None
        c = _const_operand(gr, node, t)
        # a scalar, or one value per channel shaped to broadcast over [N, C, H, W] ([C, 1, 1] / [1, C, 1, 1])
        if c is None or not (c.size == 1 or (c.ndim >= 3 and c.shape[-1] == c.shape[-2] == 1 and c.size == c.shape[-3])):
            return None
        return node, self._KINDS[node.op_type], c.astype("float64").reshape(-1)

    def affine_producer(self, t: str) -> tuple[Any, str, np.ndarray, str] | None:
        node = self.gr.producer.get(t)
        if node is None or node.op_type not in self._KINDS or _sole_use(self.gr, t) is None:
            return None
        x = next((i for i in node.input if i not in self.gr.inits), None)
        c = _const_operand(self.gr, node, x) if x is not None else None
        if c is None or c.size != 1:
            return None
        return node, self._KINDS[node.op_type], c.astype("float64").reshape(-1), x

    def absorb(self, conv: Any, node: Any) -> None:
        conv.output[0] = node.output[0]
        self.gr.remove(node)
        self.gr.reindex()

    def bypass_input(self, conv: Any, nodes: list[Any], src: str) -> None:
        conv.input[0] = src
        for n in nodes:
            self.gr.remove(n)
        self.gr.reindex()

    def store(self, conv: Any, w: np.ndarray, b: np.ndarray) -> None:
        gr = self.gr
        if not self.frozen(conv):
            gr.set_init(conv.input[1], w.astype("float32"))
        if len(conv.input) > 2 and conv.input[2] and self._uses(conv.input[2]) == 1:
            gr.set_init(conv.input[2], b.astype("float32"))
            return
        bname = f"{conv.input[1]}.folded_bias"
        while bname in gr.inits:
            bname += "_"
        gr.set_init(bname, b.astype("float32"))
        if len(conv.input) > 2:
            conv.input[2] = bname
        else:
            conv.input.append(bname)

    # GraphIR: what ONNX Runtime runs in INT8, read by graph_passes.find_sites / place_activation_qdq
    def nodes(self) -> list[Any]:
        return list(self.gr.g.node)

    def weight_kind(self, node: Any) -> str | None:
        return _WEIGHT_KINDS.get(node.op_type)

    def site_operands(self, node: Any) -> tuple[str, str] | None:
        return (node.input[0], node.input[1]) if len(node.input) >= 2 else None

    def weight_transposed(self, node: Any) -> bool:
        return node.op_type == "Gemm" and bool(next((a.i for a in node.attribute if a.name == "transB"), 0))

    def is_const(self, t: str) -> bool:
        return t in self.gr.inits

    def const_shape(self, t: str) -> list[int]:
        return list(self.gr.inits[t].shape)

    def const_value(self, t: str) -> np.ndarray:
        return self.gr.inits[t]

    def constants(self) -> list[str]:
        return list(self.gr.inits)

    def makes_constant(self, node: Any) -> bool:
        return False  # Constant nodes became initializers in the clean-up

    def opaque(self, node: Any) -> bool:
        return False  # a Loop/If's outputs are calibrated; the outer tensors its body reads count as its inputs

    def is_float(self, t: str) -> bool:
        if self._types is None:
            import onnx

            model = onnx.shape_inference.infer_shapes(self.gr.model)
            vis = list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
            self._types = {v.name: v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in vis}
        return self._types.get(t, False)

    def op_type(self, node: Any) -> str:
        return node.op_type

    def quantize_weight(self, site: Site, codes: np.ndarray, thresholds: np.ndarray, act: ActQuant | None) -> None:
        """An int8 initializer read by a ``DequantizeLinear`` (scale ``threshold / 127``); a conv bias becomes int32
        codes of input scale x weight scale, which ``QLinearConv`` takes."""
        from onnx import helper

        gr, n, w_name = self.gr, site.node, site.weight
        w_scale = (thresholds / 127.0).astype("float32")
        qw = f"{w_name}_quantized"
        gr.set_init(qw, codes.astype("int8"))
        gr.set_init(f"{w_name}_scale", w_scale)
        gr.set_init(f"{w_name}_zero_point", np.zeros(w_scale.shape, "int8"))
        pre = [
            helper.make_node(
                "DequantizeLinear",
                [qw, f"{w_name}_scale", f"{w_name}_zero_point"],
                [f"{w_name}_dequantized"],
                axis=site.axis,
                name=f"{w_name}_DQ",
            )
        ]
        n.input[1] = f"{w_name}_dequantized"
        if n.op_type == "Conv" and len(n.input) > 2 and n.input[2] in gr.inits and act is not None:
            b = gr.inits[n.input[2]].astype("float64")
            b_scale = (act.scale * w_scale.astype("float64")).astype("float32")
            b_q = np.clip(np.round(b / b_scale), -(2**31) + 1, 2**31 - 1).astype("int32")
            bn = n.input[2]
            gr.set_init(f"{bn}_quantized", b_q)
            gr.set_init(f"{bn}_scale", b_scale)
            gr.set_init(f"{bn}_zero_point", np.zeros(b_scale.shape, "int32"))
            pre.append(
                helper.make_node(
                    "DequantizeLinear",
                    [f"{bn}_quantized", f"{bn}_scale", f"{bn}_zero_point"],
                    [f"{bn}_dequantized"],
                    axis=0,
                    name=f"{bn}_DQ",
                )
            )
            n.input[2] = f"{bn}_dequantized"
        self.pending.append((n, pre))

    def insert_qdq(self, t: str, readers: list[Any], q: ActQuant) -> None:
        """``QuantizeLinear`` -> ``DequantizeLinear`` of ``t`` (u8, its ``{t}_scale`` / ``{t}_zero_point``) before its
        first reader; the readers, and the subgraphs among them that read ``t``, take the dequantized value."""
        from onnx import helper

        q_node = helper.make_node("QuantizeLinear", [t, f"{t}_scale", f"{t}_zero_point"], [f"{t}_quantized"], name=f"{t}_Q")
        dq = helper.make_node("DequantizeLinear", [f"{t}_quantized", f"{t}_scale", f"{t}_zero_point"], [f"{t}_dequantized"], name=f"{t}_DQ")
        for c in readers:
            for k, v in enumerate(c.input):
                if v == t:
                    c.input[k] = f"{t}_dequantized"
            for g in _subgraphs(c):
                if t in _free_names(g):
                    _rename_in(g, t, f"{t}_dequantized")
        self.pending.append((readers[0], [q_node, dq]))

    def graph_inputs(self) -> list[str]:
        return [i.name for i in self.gr.g.input if i.name not in self.gr.inits]

    def outputs(self, node: Any) -> list[str]:
        return [o for o in node.output if o]

    def producer(self, t: str) -> Any | None:
        return self.gr.producer.get(t)

    def consumers(self, t: str) -> list[Any]:
        return list(self.gr.consumers.get(t, []))

    def is_graph_output(self, t: str) -> bool:
        return t in self.gr.outputs

    def shape_only(self, node: Any) -> bool:
        return node.op_type in _SHAPE_ONLY

    def int8_input(self, node: Any) -> bool:
        return id(node) in self.int8_nodes

    def int8_output(self, node: Any) -> bool:
        return id(node) in self.int8_nodes

    def fused_into_producer(self, node: Any) -> bool:
        return False  # the clean-up folded BN and biases; a Relu after a quantized op is removed (u8 clamps)

    def same_scale(self, node: Any) -> bool:
        return node.op_type in SAME_SCALE_OPS

    def node_inputs(self, node: Any) -> list[str]:
        return list(node.input)


def _fuse_hardswish(gr: _Graph) -> int:
    """``Mul(x, HardSigmoid(x; alpha=1/6, beta=0.5))`` (paddle2onnx's hardswish) becomes one ``HardSwish(x)`` (opset 14).

    The same function, one op: OpenVINO then fuses the hardswish into the INT8 convolution before it
    (with the requantization), where the two-op form left a float HardSigmoid, an eltwise Mul and a
    layout reorder around each of them (PP-LCNetV3 has 28). Only in the OpenVINO layout: ONNX Runtime runs a
    QDQ MobileNetV3-large with it 2.4x slower (7.51 vs 3.15 ms at batch 1, 2 threads; OpenVINO 3.01 vs 3.47 ms).
    Returns the number of nodes fused (the model's default-domain opset is raised to 14 when there are any).
    """
    from onnx import helper

    done = 0
    for hs in list(gr.g.node):
        if hs.op_type != "HardSigmoid" or len(hs.input) != 1:
            continue
        attrs = {a.name: a.f for a in hs.attribute}
        if abs(attrs.get("alpha", 0.2) - 1.0 / 6.0) > 1e-6 or abs(attrs.get("beta", 0.5) - 0.5) > 1e-6:
            continue
        x, y = hs.input[0], hs.output[0]
        mul = _sole_use(gr, y)
        if mul is None or mul.op_type != "Mul" or sorted(mul.input) != sorted([x, y]):
            continue
        fused = helper.make_node("HardSwish", [x], [mul.output[0]], name=f"{hs.name or y}_hardswish")
        gr.g.node.insert(list(gr.g.node).index(mul), fused)
        gr.remove(mul)
        gr.remove(hs)
        done += 1
    if done:
        for o in gr.model.opset_import:
            if o.domain in ("", "ai.onnx") and o.version < 14:
                o.version = 14  # opsets 13 -> 14 only add types and attributes with the old behaviour as default
        gr.reindex()
    return done


def _split_hardswish(gr: _Graph) -> int:
    """``HardSwish(x)`` becomes ``Mul(x, HardSigmoid(x; alpha=1/6, beta=0.5))``: the inverse of :func:`_fuse_hardswish`.

    paddle2onnx 2.0 writes Paddle's hardswish as one ``HardSwish`` op, 2.1 as the two ops; ONNX Runtime runs the
    one-op form around QDQ convolutions 2.4x slower (QDQ MobileNetV3-large, 7.51 vs 3.15 ms at batch 1, 2 threads),
    so its layout always gets the two-op form, whichever paddle2onnx wrote the file. Returns the number split.
    """
    from onnx import helper

    done = 0
    for hs in list(gr.g.node):
        if hs.op_type != "HardSwish" or hs.domain not in ("", "ai.onnx"):
            continue
        x, y = hs.input[0], hs.output[0]
        gate = f"{hs.name or y}_hardsigmoid"
        at = list(gr.g.node).index(hs)
        gr.g.node.insert(at, helper.make_node("Mul", [x, gate], [y], name=f"{hs.name or y}_mul"))
        gr.g.node.insert(at, helper.make_node("HardSigmoid", [x], [gate], name=gate, alpha=1.0 / 6.0, beta=0.5))
        gr.remove(hs)
        done += 1
    if done:
        gr.reindex()
    return done


def _clean_up(gr: _Graph, keep: set[str] | None = None, *, target_runtime: str = "onnxruntime") -> int:
    """The exact float clean-up before QDQ: constants as initializers, no Identity, conv biases, BN and affine blocks
    folded into the convs (:func:`slim_quant.graph_passes.fold_affine`; filters in ``keep`` are not rescaled), and
    the hardswish in the form ``target_runtime`` (:attr:`QuantPlan.target_runtime`) wants: OpenVINO one op
    (:func:`_fuse_hardswish`), ONNX Runtime ``x * HardSigmoid(x)`` (:func:`_split_hardswish`: it runs a QDQ
    MobileNetV3 2.4x slower with the one op). Returns the convs whose affine blocks were folded."""
    _constants_to_initializers(gr)
    _drop_identities(gr)
    done = fold_affine(_OnnxIR(gr, keep or set()))
    gr.reindex()
    for n in list(gr.g.node):  # the Reshape/Unsqueeze of a bias that went into its conv
        if not any(gr.consumers.get(o) or o in gr.outputs for o in n.output) and all(i in gr.inits or not i for i in n.input):
            gr.remove(n)
    gr.reindex()
    if target_runtime == "openvino":
        _fuse_hardswish(gr)
    else:
        _split_hardswish(gr)
    used = {i for n in gr.g.node for i in _node_inputs(n)}
    for name in list(gr.inits):
        if name not in used:
            gr.drop_init(name)
    return done


def _calibrate(model: Any, gr: _Graph, names: list[str], batches: Sequence[dict[str, np.ndarray]], make: Any) -> dict[str, Calibrator]:
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for t in names:
        if t not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 2
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "probe.onnx")
        onnx.save(probe, path)
        try:
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ExportError(f"ONNX Runtime cannot load the float ONNX model (paddle2onnx's conversion): {first}") from exc
        inputs = [i.name for i in sess.get_inputs()]
        cals = {t: make() for t in names}
        for b in batches:
            missing = [i for i in inputs if i not in b]
            if missing:
                raise ExportError(f"calibration batches lack the ONNX input(s) {missing}")
            outs = sess.run(names, {i: b[i] for i in inputs})
            for t, a in zip(names, outs):
                cals[t].observe(a)
    return cals


def quantize_onnx_model(
    src: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    batches: Sequence[dict[str, np.ndarray]],
    plan: QuantPlan | None = None,
    *,
    calibration: dict[str, Calibrator] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Insert QDQ into a float ONNX model (see the module docstring).

    Args:
        src: the float ``.onnx`` file.
        out_file: the quantized ``.onnx`` to write.
        batches: calibration feeds by ONNX input name.
        plan: what to quantize and how (weights by initializer name, which the PIR/legacy parameter
            names become in paddle2onnx's output); ``options`` build one when it is None.
        calibration: a cache of the activation calibrators: filled on the first call, reused (no
            calibration run) when it is not empty, e.g. to build the same model with other skipped ops.

    Returns:
        ``{"quantized_ops": [...], "qdq_tensors": n, "removed_activations": n, "float_blocks": {...}, "target_runtime": ...}``
        (``float_blocks``: the control-flow nodes whose subgraphs stay float, see :func:`float_blocks`;
        ``target_runtime``: the runtime the layout was made for, :attr:`QuantPlan.target_runtime`).
    """
    onnx, _ = _require_onnx()

    plan = plan or QuantPlan(**options)
    model = onnx.load(str(src))
    gr = _Graph(model)
    _clean_up(gr, set(plan.weight_codes), target_runtime=plan.target_runtime)
    # 1. which compute nodes are quantized
    sites = [st for st in find_sites(_OnnxIR(gr, set())) if plan.selects(st.weight)]
    qnodes = [st.node for st in sites]
    qset = {id(n) for n in qnodes}
    # 2. calibrate every float activation (before removing activations: their outputs are the clamped values we need)
    acts = float_activations(_OnnxIR(gr, set()))
    if calibration:
        cals = calibration
    else:
        cals = _calibrate(model, gr, acts, batches, plan.new_calibrator)
        if calibration is not None:
            calibration.update(cals)
    # 3. drop Relu / Clip(0, c) right after a quantized op: the u8 code clamps the same way
    removed = 0
    clamp: dict[str, float] = {}
    for n in list(gr.g.node):
        if n.op_type not in ("Relu", "Clip"):
            continue
        src_t = n.input[0]
        prod = gr.producer.get(src_t)
        after_add = prod is not None and prod.op_type == "Add" and all(i not in gr.inits for i in prod.input)
        if prod is None or not (id(prod) in qset or after_add) or len(gr.consumers.get(src_t, [])) != 1:
            continue
        if src_t in gr.outputs or n.output[0] in gr.outputs:
            continue
        hi = np.inf
        if n.op_type == "Clip":
            lo_v = gr.inits.get(n.input[1]) if len(n.input) > 1 and n.input[1] else None
            hi_v = gr.inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            if lo_v is None or float(lo_v) != 0.0:
                continue
            hi = float(hi_v) if hi_v is not None else np.inf
        prod.output[0] = n.output[0]
        gr.remove(n)
        clamp[n.output[0]] = hi
        removed += 1
    gr.reindex()
    # 4. which tensors get QDQ
    # an Add of a constant (a bias left after MatMul) has no INT8 kernel: only activation + activation counts
    pass_nodes = {id(n) for n in gr.g.node if n.op_type in PASS_OPS and not (n.op_type == "Add" and any(i in gr.inits for i in n.input))}
    int8_nodes = qset | pass_nodes

    site_inputs: dict[str, list[Any]] = {}
    for n in qnodes:
        site_inputs.setdefault(n.input[0], []).append(n)
    calibrated = {t for t in acts if t in cals and cals[t].count > 0}
    qdq = place_activation_qdq(_OnnxIR(gr, set(), int8_nodes), site_inputs, calibrated)
    for t in clamp:  # a removed activation is only correct if its clamping QDQ is there for every consumer
        qdq[t] = list(gr.consumers.get(t, []))
    # ONNX Runtime fuses DQ -> Conv/MatMul -> Q into QLinearConv/QLinearMatMul only with an output QDQ. OpenVINO runs
    # DQ -> Conv in INT8 with a float output by itself: there an output QDQ whose consumers stay float (hardswish,
    # an SE gate, the head) is one more layer that requantizes and dequantizes the tensor, so it is left out.
    for n in qnodes if plan.target_runtime == "onnxruntime" else ():
        t = n.output[0]
        if t in qdq or t not in cals or not cals[t].count or t in gr.outputs:
            continue
        cons = [c for c in gr.consumers.get(t, []) if c.op_type not in _SHAPE_ONLY]
        if n.op_type != "Conv" and len(cons) == 1 and cons[0].op_type == "Add" and any(i in gr.inits for i in cons[0].input):
            continue  # MatMul + bias without output QDQ becomes MatMulIntegerToFloat with the bias fused, float out
        qdq[t] = cons
    # 5. the codes of each activation (one scale through pooling and reshapes), int8 weights, QDQ pairs
    ir = _OnnxIR(gr, set())
    given = input_thresholds(plan, sites, {t: float(c.threshold()) for t, c in cals.items()})
    quant = {}
    for t in qdq:
        thr, is_given = given.get(t, (float(cals[t].threshold()) if t in cals else 0.0, False))
        cal = cals.get(t)
        quant[t] = activation_quant(
            ir.capabilities,
            thr,
            given=is_given,
            non_negative=cal is not None and cal.non_negative,
            observed=(cal.min_value, cal.max_value) if cal is not None and cal.count else None,
            clamp=clamp.get(t),
        )
    qparams = {t: (q.scale, q.zero_point) for t, q in quant.items()}
    share_scales(ir, qparams, {t: hi / 255.0 for t, hi in clamp.items()})
    quant = {t: ActQuant(quant[t].threshold, *qparams[t]) for t in quant}
    for t, q in quant.items():
        gr.set_init(f"{t}_scale", np.array(q.scale, "float32"))
        gr.set_init(f"{t}_zero_point", np.array(q.zero_point, "uint8"))
    done = insert_quantization(ir, plan, sites, qdq, quant)
    new_nodes = ir.pending
    _insert_before(gr, new_nodes)
    used = {i for n in gr.g.node for i in _node_inputs(n)}
    for name in list(gr.inits):
        if name not in used:
            gr.drop_init(name)
    _topological_sort(gr)
    onnx.checker.check_model(model)
    onnx.save(model, str(out_file))
    return {
        "quantized_ops": done,
        "qdq_tensors": len(qdq),
        "removed_activations": removed,
        "float_blocks": float_blocks(model),
        "target_runtime": plan.target_runtime,
    }


def _insert_before(gr: _Graph, items: list[tuple[Any, list[Any]]]) -> None:
    for anchor, nodes in items:
        idx = list(gr.g.node).index(anchor)
        for k, node in enumerate(nodes):
            gr.g.node.insert(idx + k, node)


def _topological_sort(gr: _Graph) -> None:
    available = {i.name for i in gr.g.input} | set(gr.inits) | {""}
    pending = list(gr.g.node)
    ordered = []
    while pending:
        progressed = False
        rest = []
        for n in pending:
            if all(i in available for i in _node_inputs(n)):
                ordered.append(n)
                available.update(n.output)
                progressed = True
            else:
                rest.append(n)
        if not progressed:
            raise ExportError(f"QDQ insertion left a cycle or a dangling input at {rest[0].op_type} {rest[0].name}")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del gr.g.node[:]
    gr.g.node.extend(copies)


def quantize_onnx_from_paddle(
    src_prefix: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    batches: Sequence[dict[str, np.ndarray]],
    *,
    fp32_onnx: str | os.PathLike[str],
    **kw: Any,
) -> dict[str, Any]:
    """Convert a float Paddle inference model to ONNX (``fp32_onnx``, kept for comparison) and quantize it."""
    _require_onnx()
    from slim_core.model_io import resolve_model_path
    from slim_deploy.predictor import paddle_to_onnx

    prefix, fmt = resolve_model_path(src_prefix)
    model_file = Path(str(prefix) + (".pdmodel" if fmt == "legacy" else ".json"))
    fp32 = Path(fp32_onnx)
    fp32.parent.mkdir(parents=True, exist_ok=True)
    paddle_to_onnx(model_file, Path(str(prefix) + ".pdiparams"), fp32)
    return quantize_onnx_model(fp32, out_file, batches, **kw)
