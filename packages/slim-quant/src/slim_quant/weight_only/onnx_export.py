"""ONNX export of weight-only models in the forms ONNX Runtime and OpenVINO run natively.

:func:`export_weight_only` writes a model quantized by :func:`quantize_weight_only_` as
``model.onnx`` plus slim-deploy's ``slim.json`` manifest. The float graph comes from
``paddle.jit.save`` (PIR) and paddle2onnx, with every :class:`WeightOnlyLinear` exported as a
plain Linear; its ``MatMul`` is then given the integer codes instead of the float weight:

- ``form="qdq"`` (default, standard ONNX, opset 21): ``DequantizeLinear(int8/int4 codes,
  scales[, zero points]) -> MatMul``, per output channel (``axis=1``) or blocked along the
  input (``axis=0, block_size=group_size``). ONNX Runtime fuses the pair into its
  ``MatMulNBits`` kernel, OpenVINO into a ``FullyConnected`` with compressed weights.
- ``form="matmulnbits"``: ONNX Runtime's ``com.microsoft.MatMulNBits`` written directly
  (``bits`` 4 or 8, ``block_size`` a power of two from 16 to 128 dividing the group size,
  ``accuracy_level``); OpenVINO reads it too.

Both runtimes are fast only with their int8 activation path: ONNX Runtime's
``accuracy_level=4`` (its default for fused QDQ) and OpenVINO's
``DYNAMIC_QUANTIZATION_GROUP_SIZE`` (:data:`OPENVINO_OPTIONS`, recorded in the manifest under
``compression.weight_only.runtime_options``; OpenVINO's own default of 32 gives little speed-up).
The export checks on each installed runtime that the fused kernel really runs (the ONNX
Runtime optimized graph, OpenVINO's runtime precision per layer) and how close the outputs
are to the dygraph model.

Example:
    >>> from slim_quant.weight_only import WeightOnlyConfig, quantize_weight_only_, export_weight_only
    >>> quantize_weight_only_(model, WeightOnlyConfig(bits=4, group_size=128, algo="gptq"), calib,
    ...                       input_names=["input_ids", "attention_mask"])           # doctest: +SKIP
    >>> res = export_weight_only(model, "out/minilm_w4", calib[0], input_names=["input_ids", "attention_mask"],
    ...                          dynamic_dims=(0, 1))                                 # doctest: +SKIP
    >>> res.kernels["onnxruntime"]                                                    # doctest: +SKIP
    {'MatMulNBits': 36, 'quantized_layers': 36}
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from slim_analysis.latency import timed_calls
from slim_core import Batches, ConfigError, ExportError, require_paddle
from slim_core.atomic import atomic_dir, check_writable
from slim_core.errors import error_summary
from slim_core.extras import available, require
from slim_core.layers import set_sublayer
from slim_core.runtime import paddle_to_onnx
from slim_core.spec import spec_to_dicts
from slim_deploy.manifest import write_manifest
from slim_quant.export import ExportResult, LatencyGuardWarning, _jsonable
from slim_quant.weight_only.api import SmoothedLinear
from slim_quant.weight_only.layer import WeightOnlyLinear

paddle = require_paddle()

__all__ = [
    "export_weight_only",
    "WeightOnlyExportResult",
    "layer_to_onnx",
    "runner",
    "fused_kernels",
    "RUNTIMES",
    "NBITS_BLOCKS",
    "OPENVINO_OPTIONS",
]

Form = Literal["qdq", "matmulnbits"]
RUNTIMES: tuple[str, ...] = ("onnxruntime", "openvino")
#: MatMulNBits block sizes used, largest first (ONNX Runtime's CPU kernels take powers of two >= 16).
NBITS_BLOCKS: tuple[int, ...] = (128, 64, 32, 16)
_INT_PRECISIONS = ("u8", "i8", "u4", "i4")
#: OpenVINO properties of the weight-only fast path: int8 activations in groups of 128 inside the compressed matmul.
OPENVINO_OPTIONS: dict[str, str] = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "128"}


@dataclass
class WeightOnlyExportResult(ExportResult):
    """What :func:`export_weight_only` wrote and checked (an :class:`~slim_quant.export.ExportResult`).

    Attributes:
        form: ``"qdq"`` or ``"matmulnbits"``.
        layers: quantized layer path -> ONNX node that computes it.
        kernels: per runtime, how many quantized layers its optimized graph runs with a
            weight-compressed kernel (``MatMulNBits`` for ONNX Runtime, ``FullyConnected`` with
            int8/int4 runtime precision for OpenVINO) next to ``quantized_layers``.
        runtime_options: the runtime settings the numbers were taken with (also in ``slim.json``).
        agreement / latency_ms: per runtime, output agreement with the dygraph model (``cosine_min``,
            ``rel_err``, ``max_abs_err``) and, with ``latency_guard``, FP32 vs weight-only median latency.
    """

    form: str = "qdq"
    layers: dict[str, str] = field(default_factory=dict)
    kernels: dict[str, dict[str, int]] = field(default_factory=dict)
    runtime_options: dict[str, dict[str, Any]] = field(default_factory=dict)


def _require(module: str) -> Any:
    extra = "openvino" if module == "openvino" else "onnx"
    return require(module, package="slim-quant", extra=extra, what="weight-only ONNX export")


def layer_to_onnx(layer: Any, input_spec: Sequence[Any], *, opset: int = 17) -> Any:
    """The float ONNX graph of a dygraph Layer: ``paddle.jit.save`` (PIR) then paddle2onnx, in memory.

    paddle2onnx is told not to post-optimize (otherwise it tries to ``pip install`` a graph tool on
    every export). Parameter names are kept: a Linear's ``MatMul`` reads a tensor named like its
    ``weight.name``.

    Raises:
        MissingExtraError: paddle2onnx or onnx is not installed.
        ExportError: Paddle cannot trace the layer or paddle2onnx refuses it.

    Example:
        >>> spec = [paddle.static.InputSpec([None, 64], "float32", "x")]
        >>> proto = layer_to_onnx(paddle.nn.Linear(64, 8), spec)
        >>> [n.op_type for n in proto.graph.node if n.op_type == "MatMul"]
        ['MatMul']
    """
    onnx = _require("onnx")
    layer.eval()
    with tempfile.TemporaryDirectory(prefix="slim-wo-onnx-") as work:
        prefix = Path(work) / "model"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Paddle's "Tensor do not have 'place' interface" while tracing
                paddle.jit.save(layer, str(prefix), input_spec=list(input_spec))
        except Exception as exc:
            raise ExportError(f"paddle.jit.save could not trace {type(layer).__name__}: {error_summary(exc)}") from exc
        finally:
            if not paddle.in_dynamic_mode():
                paddle.disable_static()
        out = paddle_to_onnx(
            prefix.with_suffix(".json"), prefix.with_suffix(".pdiparams"), Path(work) / "model.onnx", opset=opset, package="slim-quant"
        )
        return onnx.load(str(out))


# the float twin -----------------------------------------------------------------------------
def _float_twin(model: Any, layers: dict[str, WeightOnlyLinear]) -> tuple[Any, dict[str, str]]:
    """A copy of ``model`` whose weight-only layers are float Linears; returns it and weight name -> layer path."""
    twin = copy.deepcopy(model)
    names: dict[str, str] = {}
    for path, q in layers.items():
        lin = paddle.nn.Linear(q.in_features, q.out_features, bias_attr=None if q.bias is not None else False)
        lin.weight.set_value(q.dequantized_weight().astype("float32"))
        if q.bias is not None:
            lin.bias.set_value(q.bias.astype("float32"))
        names[lin.weight.name] = path
        set_sublayer(twin, path, lin if q.input_scale is None else SmoothedLinear(lin, q.input_scale.numpy()))
    twin.eval()
    return twin, names


# graph rewrite --------------------------------------------------------------------------------
def _grid(q: WeightOnlyLinear, path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Integer codes ``[in, out]`` (signed when symmetric), scales and integer zero points of a layer."""
    with paddle.no_grad():
        codes = np.rint(q.codes().numpy()).astype(np.int32)
    scales = q.scales.numpy().astype(np.float32)
    zeros = None
    if q.zeros is not None:
        z = q.zeros.numpy().astype(np.float64)
        if not np.allclose(z, np.rint(z)):
            raise ExportError(f"layer {path!r} has fractional zero points, which ONNX integer zero points cannot hold")
        zeros = np.rint(z).astype(np.int32)
    return codes, scales, zeros


def _int_tensor(name: str, values: np.ndarray, bits: int, signed: bool) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    if bits == 8:
        return numpy_helper.from_array(values.astype(np.int8 if signed else np.uint8), name)
    flat = (values.reshape(-1).astype(np.int16) & 0x0F).astype(np.uint8)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    packed = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)  # element 2i in the low nibble
    return helper.make_tensor(name, TensorProto.INT4 if signed else TensorProto.UINT4, list(values.shape), packed.tobytes(), raw=True)


def _qdq_nodes(q: WeightOnlyLinear, path: str, a: str, out: str, base: str) -> tuple[list[Any], list[Any]]:
    from onnx import helper, numpy_helper

    codes, scales, zeros = _grid(q, path)
    signed = zeros is None
    per_channel = scales.shape[0] == 1
    inits = [_int_tensor(base + ".qweight", codes, q.bits, signed)]
    inits.append(numpy_helper.from_array(scales[0] if per_channel else scales, base + ".scales"))
    inputs = [base + ".qweight", base + ".scales"]
    if zeros is not None:
        inits.append(_int_tensor(base + ".zeros", zeros[0] if per_channel else zeros, q.bits, False))
        inputs.append(base + ".zeros")
    attrs: dict[str, int] = {"axis": 1} if per_channel else {"axis": 0, "block_size": q.group_size}
    nodes = [
        helper.make_node("DequantizeLinear", inputs, [base + ".dequantized"], name=base + ".dq", **attrs),
        helper.make_node("MatMul", [a, base + ".dequantized"], [out], name=base + ".matmul"),
    ]
    return nodes, inits


def _nbits_block(group: int, path: str) -> int:
    for b in NBITS_BLOCKS:
        if group % b == 0:
            return b
    raise ExportError(
        f"layer {path!r} has group size {group}, which no MatMulNBits block size {NBITS_BLOCKS} divides; "
        "use form='qdq' or a group size that is a multiple of 16"
    )


def _nbits_nodes(q: WeightOnlyLinear, path: str, a: str, out: str, base: str, accuracy_level: int) -> tuple[list[Any], list[Any]]:
    from onnx import helper, numpy_helper

    codes, scales, zeros = _grid(q, path)
    k, n, bits = q.in_features, q.out_features, q.bits
    block = _nbits_block(q.group_size, path)
    rep = q.group_size // block
    nb = k // block
    if zeros is None:
        codes = codes + 2 ** (bits - 1)  # MatMulNBits' default zero point is 2^(bits-1)
    ct = codes.T.reshape(n, nb, block).astype(np.uint8)
    blob = (ct[..., 0::2] | (ct[..., 1::2] << 4)).astype(np.uint8) if bits == 4 else ct
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(blob), base + ".qweight"),
        numpy_helper.from_array(np.ascontiguousarray(np.repeat(scales, rep, axis=0).T).reshape(-1), base + ".scales"),
    ]
    inputs = [a, base + ".qweight", base + ".scales"]
    if zeros is not None:
        zp = np.repeat(zeros, rep, axis=0).T.astype(np.uint8)  # [N, blocks]
        if bits == 4:
            if nb % 2:
                zp = np.concatenate([zp, np.zeros((n, 1), np.uint8)], axis=1)
            zp = (zp[:, 0::2] | (zp[:, 1::2] << 4)).astype(np.uint8)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(zp).reshape(-1), base + ".zeros"))
        inputs.append(base + ".zeros")
    node = helper.make_node(
        "MatMulNBits", inputs, [out], name=base + ".matmulnbits", domain="com.microsoft", K=k, N=n, bits=bits, block_size=block,
        accuracy_level=accuracy_level,
    )  # fmt: skip
    return [node], inits


def _merge_twin_muls(gr: Any, source: Any) -> None:
    """One ``Mul`` per tensor and constant: SmoothQuant gives the Linears that read one tensor (q/k/v) the same
    factors, and paddle2onnx writes one ``Mul`` per Linear."""
    kept: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
    rename: dict[str, str] = {}
    for node in list(gr.g.node):
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        if node.op_type != "Mul" or len(node.input) != 2 or node.output[0] in gr.outputs:
            continue
        consts = [source(i) for i in node.input]
        which = [c in gr.inits for c in consts]
        if which.count(True) != 1:
            continue
        value = gr.inits[consts[which.index(True)]]
        key = (node.input[which.index(False)], value.tobytes(), value.shape)
        if key in kept:
            rename[node.output[0]] = kept[key]
            gr.g.node.remove(node)
        else:
            kept[key] = node.output[0]


def _rewrite(proto: Any, targets: dict[str, str], layers: dict[str, WeightOnlyLinear], form: str, accuracy_level: int) -> dict[str, str]:
    """Give every targeted MatMul integer weights; returns layer path -> new node name."""
    from onnx import helper

    from slim_quant.onnx_qdq import _constants_to_initializers, _Graph

    gr = _Graph(proto)
    _constants_to_initializers(gr)

    def source(name: str) -> str:
        while name not in gr.inits and name in gr.producer and gr.producer[name].op_type == "Identity":
            name = gr.producer[name].input[0]
        return name

    _merge_twin_muls(gr, source)
    done: dict[str, str] = {}
    nodes = list(gr.g.node)
    new_nodes: list[Any] = []
    for node in nodes:
        w = source(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        path = targets.get(w) if w else None
        if path is None or path in done:
            new_nodes.append(node)
            continue
        q = layers[path]
        base = "slim_wo." + path
        if form == "qdq":
            made, inits = _qdq_nodes(q, path, node.input[0], node.output[0], base)
        else:
            made, inits = _nbits_nodes(q, path, node.input[0], node.output[0], base, accuracy_level)
        new_nodes.extend(made)
        gr.g.initializer.extend(inits)
        done[path] = made[-1].name
    missing = [p for p in layers if p not in done]
    if missing:
        raise ExportError(
            f"{len(missing)} weight-only layer(s) have no MatMul in the ONNX graph paddle2onnx wrote, e.g. {missing[:3]} "
            "(a Linear whose matmul paddle2onnx fused or transposed is not supported)"
        )
    del gr.g.node[:]
    gr.g.node.extend(new_nodes)
    # drop what only the float weights used (Identity chains, the float initializers)
    while True:
        used = {i for n in gr.g.node for i in n.input} | {o.name for o in gr.g.output}
        dead = [n for n in gr.g.node if n.op_type == "Identity" and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            gr.g.node.remove(n)
    keep = [i for i in gr.g.initializer if i.name in used]
    del gr.g.initializer[:]
    gr.g.initializer.extend(keep)
    if form == "matmulnbits" and not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return done


# runtimes -------------------------------------------------------------------------------------
def _ort_session(file: Path, threads: int, options: dict[str, Any] | None = None, optimized: Path | None = None) -> Any:
    ort = _require("onnxruntime")
    so = ort.SessionOptions()
    for key, value in (options or {}).items():
        if key.startswith("session."):
            so.add_session_config_entry(key, str(value))
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    try:
        return ort.InferenceSession(str(file), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"ONNX Runtime cannot load the exported {file.name}: {error_summary(exc)}") from exc


def _ov_compiled(file: Path, threads: int, options: dict[str, Any]) -> Any:
    import openvino as ov

    cfg = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", **options}
    try:
        return ov.Core().compile_model(str(file), "CPU", cfg)
    except Exception as exc:
        raise ExportError(f"OpenVINO cannot compile the exported {file.name}: {error_summary(exc)}") from exc


def runner(runtime: str, file: str | os.PathLike[str], *, threads: int = 2, options: dict[str, Any] | None = None) -> Any:
    """``feed dict -> first output`` for an ONNX file on ``"onnxruntime"`` or ``"openvino"`` (CPU).

    ``options``: OpenVINO compile properties, or ONNX Runtime session config entries (keys ``session.*``).

    Example:
        >>> run = runner("openvino", "out/minilm_w4/model.onnx", options=OPENVINO_OPTIONS)   # doctest: +SKIP
        >>> run({"input_ids": ids, "attention_mask": mask}).shape                           # doctest: +SKIP
        (16, 384)
    """
    if runtime == "onnxruntime":
        sess = _ort_session(Path(file), threads, options)
        return lambda feed: sess.run(None, feed)[0]
    request = _ov_compiled(Path(file), threads, options or {}).create_infer_request()

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        request.infer(feed)
        return np.array(request.get_output_tensor(0).data, copy=True)

    return run


def fused_kernels(runtime: str, file: str | os.PathLike[str], *, options: dict[str, Any] | None = None) -> dict[str, int]:
    """How many matmuls ``runtime`` runs with a weight-compressed kernel after its own graph optimization.

    ONNX Runtime: ``MatMulNBits`` nodes of the optimized graph it writes (fused ``DequantizeLinear -> MatMul``
    pairs included). OpenVINO: ``FullyConnected`` layers whose runtime precision is int8/int4.

    Example:
        >>> fused_kernels("onnxruntime", "out/minilm_w4/model.onnx")["MatMulNBits"]   # doctest: +SKIP
        36
    """
    onnx = _require("onnx")
    if runtime == "onnxruntime":
        with tempfile.TemporaryDirectory(prefix="slim-wo-ort-") as tmp:
            opt = Path(tmp) / "optimized.onnx"
            _ort_session(Path(file), 1, options, opt)
            graph = onnx.load(str(opt), load_external_data=False).graph
            ops = [n.op_type for n in graph.node]
        return {"MatMulNBits": ops.count("MatMulNBits"), "MatMul": ops.count("MatMul"), "DequantizeLinear": ops.count("DequantizeLinear")}
    compiled = _ov_compiled(Path(file), 1, options or {})
    out = {"FullyConnected_compressed": 0, "FullyConnected_float": 0}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" not in info or info["layerType"].astype(str) != "FullyConnected":
            continue
        prec = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else ""
        out["FullyConnected_compressed" if prec in _INT_PRECISIONS else "FullyConnected_float"] += 1
    return out


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a2, b2 = a.reshape(a.shape[0], -1).astype(np.float64), b.reshape(b.shape[0], -1).astype(np.float64)
    den = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    return float(np.min((a2 * b2).sum(1) / np.where(den > 0, den, 1.0)))


def _median_ms(run: Any, feed: dict[str, np.ndarray]) -> float:
    return float(np.median(timed_calls(lambda: run(feed), warmup=2, repeat=15, max_seconds=5.0)))


# the entry point ------------------------------------------------------------------------------
def export_weight_only(
    model: Any,
    path: str | os.PathLike[str],
    example_inputs: Any,
    *,
    input_names: Sequence[str] | None = None,
    dynamic_dims: Sequence[int] = (0,),
    form: Form = "qdq",
    accuracy_level: int = 4,
    openvino_options: dict[str, Any] | None = None,
    runtimes: Sequence[str] | None = None,
    latency_guard: bool = False,
    threads: int = 2,
    overwrite: bool = False,
) -> WeightOnlyExportResult:
    """Write a weight-only model as ONNX that ONNX Runtime and OpenVINO run with int8/int4 weight kernels.

    Args:
        model: a model whose Linears :func:`quantize_weight_only_` replaced by :class:`WeightOnlyLinear`
            (float32); it is not changed.
        path: the export directory (``model.onnx`` + ``slim.json``), written atomically.
        example_inputs: one batch the model is called with (array, tuple, dict): input shapes and
            dtypes, and the feed of the verification.
        input_names: model input names in call order (default ``["x"]`` or the dict keys).
        dynamic_dims: input dimensions left dynamic in the graph (``(0, 1)`` for batch and sequence).
        form: ``"qdq"`` (DequantizeLinear + MatMul, opset 21) or ``"matmulnbits"`` (com.microsoft).
        accuracy_level: ONNX Runtime's MatMulNBits compute type (4: int8 activations, the fast one; 0: float),
            written into the node (``matmulnbits``) or used as the session's QDQ fusion setting (``qdq``).
        openvino_options: OpenVINO compile properties for the check, recorded in the manifest for deployment
            (default ``OPENVINO_OPTIONS``: int8 activation groups of 128 inside compressed matmuls; OpenVINO's own
            default of 32 is barely faster than FP32). ``INFERENCE_PRECISION_HINT="f32"`` turns off its bf16.
        runtimes: runtimes to verify on (default: those installed of ``RUNTIMES``); ``()`` skips verification.
        latency_guard: also time the FP32 and weight-only graphs (example batch) on each runtime and warn
            with :class:`~slim_quant.export.LatencyGuardWarning` when weight-only is not faster.
        threads: CPU threads for the checks.
        overwrite: replace an existing ``path`` as a whole (its old files are not kept, nothing is merged).

    Returns:
        A :class:`WeightOnlyExportResult`.

    Raises:
        ConfigError: the model has no weight-only layer, an unknown form/runtime, or a float16 layer.
        ExportError: Paddle/paddle2onnx cannot export the model, a layer's matmul is not found, or a
            runtime refuses the file.
        MissingExtraError: onnx, paddle2onnx or onnxruntime is missing (``slim-quant[onnx]``).
        OutputExistsError: ``path`` exists and ``overwrite`` is False.

    Example:
        >>> import numpy as np, paddle
        >>> from slim_quant.weight_only import WeightOnlyConfig, quantize_weight_only_
        >>> m = paddle.nn.Sequential(paddle.nn.Linear(64, 64), paddle.nn.ReLU(), paddle.nn.Linear(64, 8))
        >>> _ = quantize_weight_only_(m, WeightOnlyConfig(bits=4, group_size=32))
        >>> x = np.random.rand(4, 64).astype("float32")
        >>> res = export_weight_only(m, "out/mlp_w4", x, runtimes=("onnxruntime",), overwrite=True)   # doctest: +SKIP
        >>> res.kernels["onnxruntime"]["MatMulNBits"]                                                  # doctest: +SKIP
        2
    """
    if not isinstance(model, paddle.nn.Layer):
        raise ConfigError(f"expected a paddle.nn.Layer model, got {type(model).__name__}")
    if form not in ("qdq", "matmulnbits"):
        raise ConfigError(f"form={form!r} is not supported; use 'qdq' or 'matmulnbits'")
    if accuracy_level not in (0, 1, 2, 3, 4):
        raise ConfigError(f"accuracy_level={accuracy_level} must be 0..4 (MatMulNBits)")
    layers = {n: lyr for n, lyr in model.named_sublayers() if isinstance(lyr, WeightOnlyLinear)}
    if not layers:
        raise ConfigError("the model has no WeightOnlyLinear layer: call quantize_weight_only_(model, WeightOnlyConfig(...)) first")
    half = [n for n, lyr in layers.items() if lyr.scales.dtype != paddle.float32]
    if half:
        raise ConfigError(f"weight-only ONNX export takes float32 models; {half[:3]} are {layers[half[0]].scales.dtype}")
    if form == "matmulnbits":
        for n, lyr in layers.items():
            _nbits_block(lyr.group_size, n)
    chosen = [r for r in RUNTIMES if available(r)] if runtimes is None else list(dict.fromkeys(runtimes))
    for r in chosen:
        if r not in RUNTIMES:
            raise ConfigError(f"runtime {r!r} is not supported; use {RUNTIMES}")
    for module in ("onnx", "paddle2onnx", *chosen):
        _require(module)
    batch = next(iter(Batches([example_inputs], input_names, limit=1)))
    names = list(batch)
    specs = [
        paddle.static.InputSpec([None if i in set(dynamic_dims) else int(d) for i, d in enumerate(a.shape)], str(a.dtype), n)
        for n, a in batch.items()
    ]
    out = check_writable(path, overwrite=overwrite)
    options: dict[str, dict[str, Any]] = {
        "openvino": {k: str(v) for k, v in (OPENVINO_OPTIONS if openvino_options is None else openvino_options).items()}
    }
    # ONNX Runtime takes the compute type from the node (MatMulNBits) or, when it fuses QDQ, from the session
    options["onnxruntime"] = (
        {"accuracy_level": accuracy_level} if form == "matmulnbits" else {"session.qdq_matmulnbits_accuracy_level": str(accuracy_level)}
    )
    result = WeightOnlyExportResult(path=out, formats=["onnx"], form=form, runtime_options=options)

    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            ref = model(*[paddle.to_tensor(batch[n]) for n in names])
    finally:
        if was_training:
            model.train()
    ref_np = np.asarray((ref[0] if isinstance(ref, (list, tuple)) else ref).numpy())
    twin, targets = _float_twin(model, layers)
    onnx = _require("onnx")
    with tempfile.TemporaryDirectory(prefix="slim-wo-") as work, atomic_dir(out, overwrite=overwrite) as tmp:
        proto = layer_to_onnx(twin, specs, opset=21 if form == "qdq" else 17)
        del twin
        fp32_file = Path(work) / "fp32.onnx"
        if latency_guard:
            onnx.save(proto, str(fp32_file))
        result.layers = _rewrite(proto, targets, layers, form, accuracy_level)
        result.quantized_ops = [f"{'MatMulNBits' if form == 'matmulnbits' else 'DequantizeLinear+MatMul'}:{p}" for p in result.layers]
        try:
            onnx.checker.check_model(proto)
        except Exception as exc:
            raise ExportError(f"the rewritten ONNX graph is invalid: {str(exc).splitlines()[0][:300]}") from exc
        file = tmp / "model.onnx"
        onnx.save(proto, str(file))
        del proto
        feed = {n: batch[n] for n in names}
        for rt in chosen:
            got = runner(rt, file, threads=threads, options=options.get(rt))(feed)
            result.agreement[f"{rt}_cosine_min"] = _cosine_min(got, ref_np)
            result.agreement[f"{rt}_rel_err"] = float(np.linalg.norm(got - ref_np) / (np.linalg.norm(ref_np) or 1.0))
            result.agreement[f"{rt}_max_abs_err"] = float(np.abs(got - ref_np).max())
            k = fused_kernels(rt, file, options=options.get(rt))
            k["quantized_layers"] = len(layers)
            result.kernels[rt] = k
            fused = k.get("MatMulNBits", k.get("FullyConnected_compressed", 0))
            if fused < len(layers):
                warnings.warn(
                    f"{rt} runs only {fused} of {len(layers)} weight-only matmuls with a compressed-weight kernel; the rest "
                    "dequantize at run time (slower than FP32)",
                    LatencyGuardWarning,
                    stacklevel=2,
                )
            if latency_guard:
                run_fp, run_q = runner(rt, fp32_file, threads=threads), runner(rt, file, threads=threads, options=options.get(rt))
                t_fp, t_q = _median_ms(run_fp, feed), _median_ms(run_q, feed)
                result.latency_ms.update({f"{rt}_fp32": t_fp, f"{rt}_weight_only": t_q})
                if t_q >= 0.95 * t_fp:
                    warnings.warn(
                        f"the weight-only model is NOT faster than FP32 on {rt}: {t_q:.2f} ms vs {t_fp:.2f} ms per batch of "
                        f"{ref_np.shape[0]}",
                        LatencyGuardWarning,
                        stacklevel=2,
                    )
        _write_manifest(tmp, model, specs, result)
    for f in os.listdir(out):
        result.file_bytes[f] = (out / f).stat().st_size
    return result


def _write_manifest(tmp: Path, model: Any, specs: list[Any], result: WeightOnlyExportResult) -> None:

    report = getattr(model, "slim_weight_only", None)
    record = {
        "config": dict(report.config) if report is not None else {},
        "form": result.form,
        "layers": result.layers,
        "runtime_options": result.runtime_options,
    }
    verification: dict[str, Any] = {"reference": "weight-only dygraph model", **result.agreement, "kernels": result.kernels}
    if result.latency_ms:
        verification["latency_ms"] = dict(result.latency_ms)
    write_manifest(
        tmp,
        spec_to_dicts(specs),
        format="onnx",
        compression=_jsonable({"weight_only": record}),
        int8=False,
        verification=_jsonable(verification),
    )
