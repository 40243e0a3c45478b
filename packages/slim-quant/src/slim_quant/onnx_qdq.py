"""ONNX QDQ export: our calibrated INT8 quantization as QuantizeLinear/DequantizeLinear nodes.

paddle2onnx refuses quantized Paddle programs, so the float model is converted
first and the quantization is inserted with the ``onnx`` library:

1. clean-up: ``Constant`` weights become initializers, a conv bias added through
   ``Reshape`` + ``Add`` becomes the conv's bias input, ``BatchNormalization``
   after a conv is folded into it;
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
from slim_quant.graph_passes import QuantPlan, fold_affine, weight_axis

__all__ = ["quantize_onnx_from_paddle", "quantize_onnx_model", "COMPUTE_OPS", "PASS_OPS", "SAME_SCALE_OPS", "float_blocks"]

COMPUTE_OPS = ("Conv", "MatMul", "Gemm")
#: ops that ONNX Runtime runs in INT8 when their inputs and outputs carry QDQ
PASS_OPS = ("Add", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "Reshape", "Flatten", "Transpose")
#: ops whose INT8 form only moves or selects values: ONNX Runtime runs them in INT8 only when the
#: input and output QDQ carry the same scale and zero point, so they share one
SAME_SCALE_OPS = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze")
_SHAPE_ONLY = ("Shape",)


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


def _fold_conv_bias_and_bn(gr: _Graph) -> None:
    """Conv -> Add(Reshape(bias)) becomes Conv(bias); Conv -> BatchNormalization is folded."""
    changed = True
    while changed:
        changed = False
        gr.reindex()
        for conv in list(gr.g.node):
            if conv.op_type != "Conv" or conv.input[1] not in gr.inits:
                continue
            out = conv.output[0]
            cons = gr.consumers.get(out, [])
            if len(cons) != 1 or out in gr.outputs:
                continue
            nxt = cons[0]
            w = gr.inits[conv.input[1]]
            bias = gr.inits.get(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
            if nxt.op_type == "Add" and nxt.input[0] == out:
                other = nxt.input[1]
                prod = gr.producer.get(other)
                b = None
                if other in gr.inits:
                    b = gr.inits[other]
                elif prod is not None and prod.op_type in ("Reshape", "Unsqueeze") and prod.input[0] in gr.inits:
                    b = gr.inits[prod.input[0]]
                if b is None or b.size != w.shape[0]:
                    continue
                b = b.reshape(-1).astype("float32") + (bias if bias is not None else 0.0)
            elif nxt.op_type == "BatchNormalization" and all(i in gr.inits for i in nxt.input[1:5]):
                gamma, beta, mean, var = (gr.inits[i].astype("float64") for i in nxt.input[1:5])
                eps = next((a.f for a in nxt.attribute if a.name == "epsilon"), 1e-5)
                s = gamma / np.sqrt(var + eps)
                w = (w * s.reshape(-1, *([1] * (w.ndim - 1)))).astype("float32")
                gr.set_init(conv.input[1], w)
                b = ((bias if bias is not None else 0.0) - mean) * s + beta
            else:
                continue
            bname = f"{conv.input[1]}.folded_bias"
            gr.set_init(bname, np.asarray(b, "float32").reshape(-1))
            if len(conv.input) > 2:
                conv.input[2] = bname
            else:
                conv.input.append(bname)
            conv.output[0] = nxt.output[0]
            gr.remove(nxt)
            changed = True
            break
    gr.reindex()
    # drop now-unused Reshape nodes of constants and unused initializers
    for n in list(gr.g.node):
        if n.op_type in ("Reshape", "Unsqueeze") and not gr.consumers.get(n.output[0]) and n.output[0] not in gr.outputs:
            gr.remove(n)
    gr.reindex()
    used = {i for n in gr.g.node for i in _node_inputs(n)}
    for name in list(gr.inits):
        if name not in used:
            gr.drop_init(name)


def _const_operand(gr: _Graph, node: Any, t: str) -> np.ndarray | None:
    """The initializer operand of a binary ``node`` whose other input is ``t`` (None when there is none)."""
    other = [i for i in node.input if i != t]
    return gr.inits.get(other[0]) if len(node.input) == 2 and len(other) == 1 else None


def _sole_use(gr: _Graph, t: str) -> Any | None:
    cons = gr.consumers.get(t, [])
    return cons[0] if len(cons) == 1 and t not in gr.outputs else None


class _OnnxAffine:
    """:class:`slim_quant.graph_passes.AffineIR` over an ONNX graph (``Conv`` with its bias as input 2)."""

    _KINDS = {"Mul": "mul", "Add": "add"}

    def __init__(self, gr: _Graph, keep: set[str]) -> None:
        self.gr, self.keep = gr, keep

    def _uses(self, name: str) -> int:
        return sum(_node_inputs(n).count(name) for n in self.gr.g.node)

    def convs(self) -> list[Any]:
        return [n for n in self.gr.g.node if n.op_type == "Conv"]

    def conv_params(self, conv: Any) -> tuple[np.ndarray, np.ndarray] | None:
        gr = self.gr
        wname = conv.input[1]
        if wname not in gr.inits or wname in self.keep or self._uses(wname) != 1:
            return None
        w = gr.inits[wname].astype("float64")
        if len(conv.input) > 2 and conv.input[2]:
            if conv.input[2] not in gr.inits or self._uses(conv.input[2]) != 1:
                return None
            return w, gr.inits[conv.input[2]].astype("float64").reshape(-1)
        return w, np.zeros(w.shape[0])

    def conv_out(self, conv: Any) -> str:
        return conv.output[0]

    def conv_in(self, conv: Any) -> str:
        return conv.input[0]

    def unpadded(self, conv: Any) -> bool:
        pads = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [])
        auto = next((a.s for a in conv.attribute if a.name == "auto_pad"), b"NOTSET")
        return not any(pads) and auto in (b"NOTSET", b"VALID")

    def affine_consumer(self, t: str) -> tuple[Any, str, np.ndarray] | None:
        node = _sole_use(self.gr, t)
        if node is None or node.op_type not in self._KINDS:
            return None
        c = _const_operand(self.gr, node, t)
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
        self.gr.set_init(conv.input[1], w.astype("float32"))
        if len(conv.input) > 2 and conv.input[2]:
            self.gr.set_init(conv.input[2], b.astype("float32"))
        else:
            bname = f"{conv.input[1]}.folded_bias"
            self.gr.set_init(bname, b.astype("float32"))
            if len(conv.input) > 2:
                conv.input[2] = bname
            else:
                conv.input.append(bname)


def _clean_up(gr: _Graph, keep: set[str] | None = None) -> int:
    """The exact float clean-up before QDQ: constants as initializers, no Identity, conv bias and BN folded into the
    conv, affine blocks folded (:func:`slim_quant.graph_passes.fold_affine`; filters in ``keep`` are left alone).
    Returns the convs whose affine blocks were folded."""
    _constants_to_initializers(gr)
    _drop_identities(gr)
    _fold_conv_bias_and_bn(gr)
    done = fold_affine(_OnnxAffine(gr, keep or set()))
    gr.reindex()
    used = {i for n in gr.g.node for i in _node_inputs(n)}
    for name in list(gr.inits):
        if name not in used:
            gr.drop_init(name)
    return done


def _float_activations(gr: _Graph) -> list[str]:
    import onnx

    model = onnx.shape_inference.infer_shapes(gr.model)
    types = {
        v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
    }
    const = set(gr.inits)
    for n in gr.g.node:  # outputs computed only from constants
        if n.input and all(i in const or not i for i in n.input):
            const.update(n.output)
    names = [i.name for i in gr.g.input if i.name not in gr.inits]
    for n in gr.g.node:
        names.extend(o for o in n.output if o)
    return [t for t in dict.fromkeys(names) if t not in const and types.get(t) == onnx.TensorProto.FLOAT]


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


def _weight_axis(node: Any) -> int:
    if node.op_type == "Conv":
        return weight_axis("conv")
    return weight_axis("matmul", transposed=node.op_type == "Gemm" and bool(next((a.i for a in node.attribute if a.name == "transB"), 0)))


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
    from onnx import helper

    plan = plan or QuantPlan(**options)
    model = onnx.load(str(src))
    gr = _Graph(model)
    _clean_up(gr, set(plan.weight_codes))
    # 1. which compute nodes are quantized
    qnodes = []
    for n in gr.g.node:
        if n.op_type not in COMPUTE_OPS or len(n.input) < 2 or n.input[1] not in gr.inits or n.input[0] in gr.inits:
            continue
        w = n.input[1]
        if gr.inits[w].ndim not in (2, 4) or not plan.selects(w):
            continue
        qnodes.append(n)
    qset = {id(n) for n in qnodes}
    # 2. calibrate every float activation (before removing activations: their outputs are the clamped values we need)
    acts = _float_activations(gr)
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

    def all_consumers_int8(t: str) -> bool:
        cons = [c for c in gr.consumers.get(t, []) if c.op_type not in _SHAPE_ONLY]
        return bool(cons) and all(id(c) in int8_nodes for c in cons) and t not in gr.outputs

    qdq: dict[str, list[Any]] = {}
    for n in qnodes:
        qdq.setdefault(n.input[0], []).append(n)
    graph_inputs = {i.name for i in gr.g.input}
    for t in acts:
        if t not in cals or cals[t].count == 0:
            continue
        prod = gr.producer.get(t)
        from_int8 = (prod is not None and id(prod) in int8_nodes) or t in graph_inputs
        if from_int8 and all_consumers_int8(t):
            qdq[t] = list(gr.consumers.get(t, []))  # shape consumers read the dequantized tensor too (one consumer: Q)
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
    # 5. weights
    done = []
    new_nodes: list[tuple[Any, list[Any]]] = []  # (anchor node, nodes to insert before it)
    qparams: dict[str, tuple[float, int]] = {}  # tensor -> (scale, u8 zero point)
    for t in qdq:
        thr = float(cals[t].threshold()) if t in cals else 0.0
        given = [float(plan.act_thresholds[n.input[1]]) for n in qnodes if n.input[0] == t and n.input[1] in plan.act_thresholds]
        thr = given[-1] if given else thr
        nonneg = (t in cals and cals[t].non_negative) or t in clamp
        if t in clamp:
            thr = min(thr, clamp[t])
        thr = max(thr, 1e-8)
        if nonneg:
            qparams[t] = (thr / 255.0, 0)
        elif not given and t in cals and cals[t].count:  # asymmetric range, e.g. hardswish's [-0.375, thr]
            lo, hi = max(-thr, min(cals[t].min_value, 0.0)), max(min(thr, cals[t].max_value), 1e-8)
            scale = (hi - lo) / 255.0
            qparams[t] = (scale, int(np.clip(np.round(-lo / scale), 0, 255)))
        else:
            qparams[t] = (thr / 127.0, 128)
    _share_scales(gr, qparams, clamp)
    for t, (scale, zp) in qparams.items():
        gr.set_init(f"{t}_scale", np.array(scale, "float32"))
        gr.set_init(f"{t}_zero_point", np.array(zp, "uint8"))
    for n in qnodes:
        w_name = n.input[1]
        w = gr.inits[w_name]
        axis = _weight_axis(n)
        codes, wthr = plan.int8_weight(w_name, w, axis)
        w_scale = (wthr / 127.0).astype("float32")
        qw = f"{w_name}_quantized"
        gr.set_init(qw, codes.astype("int8"))
        gr.set_init(f"{w_name}_scale", w_scale)
        gr.set_init(f"{w_name}_zero_point", np.zeros(w_scale.shape, "int8"))
        dq_w = helper.make_node(
            "DequantizeLinear", [qw, f"{w_name}_scale", f"{w_name}_zero_point"], [f"{w_name}_dequantized"], axis=axis, name=f"{w_name}_DQ"
        )
        pre = [dq_w]
        n.input[1] = f"{w_name}_dequantized"
        if n.op_type == "Conv" and len(n.input) > 2 and n.input[2] in gr.inits and n.input[0] in qparams:
            b = gr.inits[n.input[2]].astype("float64")
            b_scale = (qparams[n.input[0]][0] * w_scale.astype("float64")).astype("float32")
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
        new_nodes.append((n, pre))
        done.append(f"{n.op_type}:{w_name}")
    # 6. activation QDQ pairs, right after the producer (or at the top for graph inputs)
    for t, cons in qdq.items():
        q = helper.make_node("QuantizeLinear", [t, f"{t}_scale", f"{t}_zero_point"], [f"{t}_quantized"], name=f"{t}_Q")
        dq = helper.make_node("DequantizeLinear", [f"{t}_quantized", f"{t}_scale", f"{t}_zero_point"], [f"{t}_dequantized"], name=f"{t}_DQ")
        for c in cons:
            for k, v in enumerate(c.input):
                if v == t:
                    c.input[k] = f"{t}_dequantized"
            for g in _subgraphs(c):
                if t in _free_names(g):
                    _rename_in(g, t, f"{t}_dequantized")
        new_nodes.append((cons[0], [q, dq]))
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


def _share_scales(gr: _Graph, qparams: dict[str, tuple[float, int]], clamp: dict[str, float]) -> None:
    """Give the input and output of each :data:`SAME_SCALE_OPS` node one (scale, zero point) pair.

    The output's pair wins when the op is its input's only consumer (the output's threshold is the one the
    next quantized op was calibrated with, and clamping commutes with max pooling and reshapes); otherwise
    the input's pair is copied forward. An input that replaced a removed ReLU6 keeps its clamp.
    """
    nodes = [n for n in gr.g.node if n.op_type in SAME_SCALE_OPS and n.input and n.output]
    for n in reversed(nodes):
        src, dst = n.input[0], n.output[0]
        users = [c for c in gr.consumers.get(src, []) if c.op_type not in _SHAPE_ONLY]
        if src in qparams and dst in qparams and len(users) == 1:
            scale, zp = qparams[dst]
            if src in clamp and zp == 0:
                scale = min(scale, clamp[src] / 255.0)
            qparams[src] = qparams[dst] = (scale, zp)
    for n in nodes:
        src, dst = n.input[0], n.output[0]
        if src in qparams and dst in qparams:
            qparams[dst] = qparams[src]


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
