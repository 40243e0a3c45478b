"""INT8 rewrite plan and passes written once, over a small backend interface (the NNCF shape).

The Paddle legacy program (oneDNN INT8, :mod:`slim_quant.paddle_int8`) and the ONNX graph (QDQ,
:mod:`slim_quant.onnx_qdq`) are rewritten from one :class:`QuantPlan` by the same algorithms: the algorithm
decides, each backend only reads and edits its own IR through :class:`GraphIR` (:class:`AffineIR` for the folds),
and where the runtimes differ it answers a query (:class:`Capabilities`, ``int8_input``, ``same_scale``, ...):

- :class:`QuantPlan`: which weights are quantized, their int8 codes and thresholds (from the dygraph
  fake-quant layers or computed here), the input thresholds they learned, the activation calibrator;
- :func:`fold_affine`: conv biases (Paddle 3's ``add(conv, reshape(bias))``), BatchNorm and learnable affine
  blocks next to a convolution (PP-LCNet's ``conv -> *a + b`` and ``*c + d -> conv 1x1``) folded exactly into the
  conv's filter and bias;
- :func:`constant_tensors` / :func:`float_activations`: what is folded by the runtime, what is calibrated;
- :func:`find_sites` (with :func:`weight_axis`): the ops that get an int8 weight;
- :func:`place_activation_qdq`: which activations get a quantize/dequantize (or observer) pair;
- :func:`input_thresholds` / :func:`activation_quant`: the threshold and codes of each pair;
- :func:`share_scales`: one scale through pooling and reshapes where the runtime needs it;
- :func:`insert_quantization`: int8 weights and the pairs written into the IR.

Example:
    >>> weight_axis("conv"), weight_axis("matmul"), weight_axis("matmul", transposed=True)
    (0, 1, 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from slim_core.config import check_choice
from slim_core.errors import ExportError
from slim_quant.calibrators import Calibrator, make_calibrator
from slim_quant.primitives import quantize_np, weight_thresholds

__all__ = [
    "QuantPlan",
    "Capabilities",
    "AffineIR",
    "GraphIR",
    "Site",
    "ActQuant",
    "fold_affine",
    "constant_tensors",
    "float_activations",
    "find_sites",
    "place_activation_qdq",
    "input_thresholds",
    "activation_quant",
    "share_scales",
    "insert_quantization",
    "weight_axis",
    "WEIGHT_KINDS",
    "QDQ_TARGETS",
]

#: runtimes a QDQ export can be laid out for (:attr:`QuantPlan.target_runtime`)
QDQ_TARGETS = ("onnxruntime", "openvino")


@dataclass
class QuantPlan:
    """What an INT8 rewrite does, decided once and handed to every backend.

    Attributes:
        calibrator / percentile: the calibrator of the activations whose range is measured on the graph.
        weight_codes: int8 codes and per-channel thresholds by weight name (computed by the dygraph
            fake-quant layers, reconstruction or QAT); other weights are quantized per channel here.
        act_thresholds: input thresholds by weight name (what the fake-quant layer learned), overriding calibration.
        only_weights / skip_weights: quantize only the ops with these weights / never the ops with these.
        weight_method: per-channel threshold method for weights not in ``weight_codes``.
        target_runtime: the runtime the QDQ layout is made for (:data:`QDQ_TARGETS`). ``"onnxruntime"`` puts a QDQ
            pair on the output of every quantized Conv/MatMul (ONNX Runtime forms QLinearConv only with one);
            ``"openvino"`` leaves it out where the output's consumers stay float (hardswish, SE gates, heads):
            OpenVINO runs DQ -> Conv in INT8 with a float output by itself, and the pair would be one more
            requantize + dequantize layer. Either file runs on both runtimes with the same outputs.
            The pairs left out change which activation clipping suits the model: on PP-OCRv4 recognition the
            ``"openvino"`` layout reads best with the ``mse`` calibrator, the default one with ``percentile``
            (docs/packages/slim-quant.md).
    """

    calibrator: str = "percentile"
    percentile: float = 99.99
    weight_codes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    act_thresholds: dict[str, float] = field(default_factory=dict)
    only_weights: set[str] | None = None
    skip_weights: set[str] = field(default_factory=set)
    weight_method: str = "abs_max"
    target_runtime: str = "onnxruntime"

    def __post_init__(self) -> None:
        check_choice("target_runtime", self.target_runtime, QDQ_TARGETS)
        self.weight_codes = dict(self.weight_codes or {})
        self.act_thresholds = dict(self.act_thresholds or {})
        self.skip_weights = set(self.skip_weights or ())

    def selects(self, weight: str) -> bool:
        """Whether the op reading ``weight`` is quantized."""
        return (self.only_weights is None or weight in self.only_weights) and weight not in self.skip_weights

    def new_calibrator(self) -> Calibrator:
        return make_calibrator(self.calibrator, percentile=self.percentile)

    def int8_weight(self, name: str, w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """The int8 codes of weight ``name`` (value ``w`` in the IR) and its per-channel thresholds along ``axis``."""
        if name in self.weight_codes:
            codes, thr = self.weight_codes[name]
        else:
            thr = weight_thresholds(w, axis, method=self.weight_method)  # type: ignore[arg-type]
            codes = quantize_np(w, thr, 8, axis)
        if codes.shape != w.shape:
            raise ExportError(f"weight codes for {name} have shape {list(codes.shape)} but the exported weight is {list(w.shape)}")
        return np.ascontiguousarray(codes.astype("int8")), np.asarray(thr, "float32").reshape(-1)


#: op kinds with a quantizable weight (the backends map their op types onto these)
WEIGHT_KINDS = ("conv", "conv_transpose", "matmul")


def weight_axis(kind: str, *, transposed: bool = False) -> int:
    """Output-channel axis of the weight of a ``kind`` op (one of :data:`WEIGHT_KINDS`).

    Conv filters are ``[out, in/groups, kh, kw]`` (axis 0), transposed-conv filters ``[in, out/groups, ...]``
    (axis 1); a matmul weight is ``[in, out]`` (axis 1) unless the op reads it transposed (axis 0).
    """
    if kind == "conv":
        return 0
    if kind == "conv_transpose":
        return 1
    if kind == "matmul":
        return 0 if transposed else 1
    raise ValueError(f"unknown weight kind {kind!r}; expected one of {WEIGHT_KINDS}")


@dataclass(frozen=True)
class Capabilities:
    """What a backend's runtime needs from the rewrite; the passes ask these instead of keeping a copy per backend.

    Attributes:
        fold_batch_norm: fold a ``BatchNorm`` after a conv into its filter and bias. ONNX: yes (ONNX Runtime's
            ``QLinearConv`` has no BN to fuse, a BN left after a QDQ conv runs in float). Paddle legacy: no, oneDNN's
            ``conv_bn_fuse_pass`` folds it when it loads the INT8 program, and the program keeps Paddle's own form.
    """

    fold_batch_norm: bool = True
    #: a quantized op's input pair is read by every INT8 consumer of that tensor (ONNX: a QDQ is a tensor). Paddle
    #: legacy: no, ``quant_dequant_mkldnn_pass`` reads each pair as the input scale of the op it feeds, other readers
    #: keep the float tensor (and get no observer on it)
    pair_feeds_all_int8_consumers: bool = True
    #: the weight kinds (:data:`WEIGHT_KINDS`) the runtime has INT8 kernels for (no INT8 deconvolution in either)
    int8_weight_kinds: tuple[str, ...] = ("conv", "matmul")
    #: activation codes: ``"u8"`` (ONNX Runtime: u8 activations with s8 weights are its fast VNNI pair, zero point 0
    #: for non-negative tensors, asymmetric for calibrated signed ones) or ``"s8"`` (Paddle's ``quantize_linear``:
    #: a symmetric threshold; oneDNN picks u8/s8 itself from the fused activation)
    activation_codes: str = "u8"


class AffineIR(Protocol):
    """What :func:`fold_affine` needs from an IR. Tensors are names, nodes are the IR's own op objects."""

    capabilities: Capabilities

    def convs(self) -> list[Any]:
        """The 2-D convolutions (and transposed convolutions), in graph order."""

    def conv_params(self, conv: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """The float64 filter and the bias, one value per output channel (zeros when the conv has none yet and the
        IR can give it one), or None when the conv's filter is not a constant or its bias has no place to go."""

    def frozen(self, conv: Any) -> bool:
        """The filter must keep its values (int8 codes computed elsewhere, shared with another op, or a transposed
        conv): only additions fold into the bias, no scaling into the filter."""

    def conv_out(self, conv: Any) -> str:
        """The tensor holding ``conv(x) + bias``."""

    def conv_in(self, conv: Any) -> str:
        """The conv's activation input."""

    def unpadded(self, conv: Any) -> bool:
        """No padding: a constant added to the input reaches every output as ``d * sum(w)``."""

    def affine_consumer(self, t: str) -> tuple[Any, str, np.ndarray] | None:
        """When ``t``'s only consumer is an affine op with constant operands: ``(node, kind, c)`` with kind ``"mul"`` or
        ``"add"`` (``t * c`` / ``t + c``, ``c`` a scalar or one value per channel of axis 1, as a 1-D array; a bias
        reshaped for broadcasting counts) or ``"batch_norm"`` (``c`` = rows gamma, beta, mean, variance + epsilon)."""

    def affine_producer(self, t: str) -> tuple[Any, str, np.ndarray, str] | None:
        """When ``t`` has one consumer and is ``x * c`` or ``x + c`` with a scalar constant ``c``:
        ``(node, "mul" | "add", c as a 1-D array, x)``."""

    def absorb(self, conv: Any, node: Any) -> None:
        """Remove ``node`` (which reads :meth:`conv_out`): the conv chain now writes ``node``'s output."""

    def bypass_input(self, conv: Any, nodes: list[Any], src: str) -> None:
        """Remove ``nodes`` (the chain feeding the conv): the conv reads ``src``."""

    def store(self, conv: Any, w: np.ndarray, b: np.ndarray) -> None:
        """Write the new filter and bias (and drop the constants nothing reads any more)."""


@dataclass(frozen=True)
class Site:
    """One quantizable op: the IR's node, its weight kind, activation input, weight and the weight's channel axis."""

    node: Any
    kind: str
    act: str
    weight: str
    axis: int


#: weight rank of each quantizable kind (2-D convolutions, ``[in, out]`` matmul weights)
_WEIGHT_NDIM = {"conv": 4, "conv_transpose": 4, "matmul": 2}


def find_sites(ir: GraphIR) -> list[Site]:
    """The ops an INT8 runtime can run with an int8 weight, in graph order: a constant weight of the kind's rank, a
    non-constant activation input, a kind in :attr:`Capabilities.int8_weight_kinds`. The caller selects among them
    (:meth:`QuantPlan.selects`)."""
    sites = []
    for n in ir.nodes():
        kind = ir.weight_kind(n)
        operands = ir.site_operands(n) if kind in ir.capabilities.int8_weight_kinds else None
        if operands is None:
            continue
        act, w = operands
        if not ir.is_const(w) or ir.is_const(act) or len(ir.const_shape(w)) != _WEIGHT_NDIM[kind]:  # type: ignore[index]
            continue
        sites.append(Site(n, kind, act, w, weight_axis(kind, transposed=ir.weight_transposed(n))))  # type: ignore[arg-type]
    return sites


class GraphIR(AffineIR, Protocol):
    """What the INT8 placement passes need from an IR, beyond the folds (:class:`AffineIR`).

    Nodes are the IR's own op objects, tensors are names. The runtime's limits are answered per node
    (:meth:`int8_input`, :meth:`int8_output`, :meth:`fused_into_producer`) and by :attr:`capabilities`.
    """

    def nodes(self) -> list[Any]:
        """Every op, in graph order."""

    def weight_kind(self, node: Any) -> str | None:
        """``node``'s kind in :data:`WEIGHT_KINDS` when it is a conv, transposed conv or matmul, else None."""

    def site_operands(self, node: Any) -> tuple[str, str] | None:
        """``(activation input, weight input)`` of a :meth:`weight_kind` node, None when it has not one of each."""

    def weight_transposed(self, node: Any) -> bool:
        """A matmul that reads its weight transposed (``[out, in]``)."""

    def is_const(self, t: str) -> bool:
        """``t`` is a constant (a parameter / initializer)."""

    def const_shape(self, t: str) -> list[int]:
        """The shape of the constant ``t``."""

    def const_value(self, t: str) -> np.ndarray:
        """The value of the constant ``t``."""

    def constants(self) -> list[str]:
        """Every constant (parameters / initializers)."""

    def makes_constant(self, node: Any) -> bool:
        """``node`` has no input and writes a constant (Paddle's ``fill_constant``)."""

    def opaque(self, node: Any) -> bool:
        """The rewrite does not see into ``node`` (feed/fetch, a loop or branch whose body stays float): its tensors
        are not calibrated through it."""

    def is_float(self, t: str) -> bool:
        """``t`` is a float32 tensor."""

    def op_type(self, node: Any) -> str:
        """The IR's own name of ``node``'s op (for reports)."""

    def quantize_weight(self, site: Site, codes: np.ndarray, thresholds: np.ndarray, act: ActQuant | None) -> None:
        """Store the site's weight as int8 ``codes`` with per-channel ``thresholds`` along ``site.axis``, read through
        a dequantize (``act``: the quantization of its input, for a bias the runtime wants in int32)."""

    def insert_qdq(self, t: str, readers: list[Any], q: ActQuant) -> None:
        """Put a quantize/dequantize pair with ``q`` on ``t``; ``readers`` read the dequantized value."""

    def graph_inputs(self) -> list[str]:
        """Tensors fed from outside that no node produces."""

    def node_inputs(self, node: Any) -> list[str]:
        """The inputs of ``node``, the data input first."""

    def outputs(self, node: Any) -> list[str]:
        """The data outputs of ``node`` (not the side outputs such as a BN's saved statistics)."""

    def producer(self, t: str) -> Any | None:
        """The node writing ``t`` (None for a graph input or a constant)."""

    def consumers(self, t: str) -> list[Any]:
        """The nodes reading ``t``."""

    def is_graph_output(self, t: str) -> bool:
        """``t`` is fetched from the graph (it must stay float)."""

    def shape_only(self, node: Any) -> bool:
        """``node`` reads only its input's shape (its value may be quantized or not)."""

    def int8_input(self, node: Any) -> bool:
        """The runtime can run ``node`` on an INT8 (quantized-dequantized) input."""

    def int8_output(self, node: Any) -> bool:
        """The runtime can give ``node`` an INT8 output (a scale recorded on it is used, not a wrong guess)."""

    def fused_into_producer(self, node: Any) -> bool:
        """The runtime fuses ``node`` into the op producing its input (a tensor between them has no scale of its own)."""

    def same_scale(self, node: Any) -> bool:
        """The runtime runs ``node`` (pooling, reshapes) in INT8 only when its input and output carry one scale."""


def constant_tensors(ir: GraphIR) -> set[str]:
    """The constants and every tensor computed from constants only (a conv bias reshaped for broadcasting, a shape
    computed from a parameter): values the runtime folds, never calibrated nor quantized as activations."""
    const = set(ir.constants())
    for n in ir.nodes():
        if ir.opaque(n):
            continue
        ins = [i for i in ir.node_inputs(n) if i]
        if (ins and all(i in const for i in ins)) or (not ins and ir.makes_constant(n)):
            const.update(ir.outputs(n))
    return const


def float_activations(ir: GraphIR) -> list[str]:
    """The float activations worth a threshold, in graph order: graph inputs and the inputs and outputs of every
    node the rewrite sees into (:meth:`GraphIR.opaque`: control flow whose body stays float), not constants."""
    const = constant_tensors(ir)
    names = [*ir.graph_inputs(), *(t for n in ir.nodes() if not ir.opaque(n) for t in [*ir.node_inputs(n), *ir.outputs(n)])]
    return [t for t in dict.fromkeys(names) if t and t not in const and ir.is_float(t)]


def place_activation_qdq(ir: GraphIR, site_inputs: dict[str, list[Any]], calibrated: set[str]) -> dict[str, list[Any]]:
    """Which activations get a quantize/dequantize pair, each with the nodes that read its dequantized value.

    ``site_inputs`` are the inputs of the quantized ops (each read by those ops); a pair goes besides on every
    calibrated tensor that flows between INT8 ops only: its producer can give an INT8 output (or it is a graph
    input), every consumer except shape readers takes an INT8 input, not every consumer is fused into the producer,
    and it is not a graph output. Its pair then feeds all its consumers; a quantized op's input is widened the same
    way where :attr:`Capabilities.pair_feeds_all_int8_consumers` says so.
    """
    qdq = {t: list(ops) for t, ops in site_inputs.items()}
    widen = ir.capabilities.pair_feeds_all_int8_consumers
    for t in dict.fromkeys([*ir.graph_inputs(), *(o for n in ir.nodes() for o in ir.outputs(n))]):
        if t not in calibrated or ir.is_graph_output(t) or (t in site_inputs and not widen):
            continue
        prod = ir.producer(t)
        if prod is not None and not ir.int8_output(prod):
            continue
        readers = ir.consumers(t)
        data = [c for c in readers if not ir.shape_only(c)]
        if data and all(ir.int8_input(c) for c in data) and not all(ir.fused_into_producer(c) for c in data):
            qdq[t] = readers
    return qdq


def share_scales(ir: GraphIR, qparams: dict[str, tuple[float, int]], max_scale: dict[str, float]) -> None:
    """Give the input and output of each :meth:`~GraphIR.same_scale` node one ``(scale, zero point)`` pair, in place.

    The output's pair wins when the op is its input's only (non-shape) consumer: the output's threshold is the one
    the next quantized op was calibrated with, and clamping commutes with max pooling and reshapes. Otherwise the
    input's pair is copied forward. ``max_scale``: tensors that replaced a removed clamp (ReLU6), whose scale must
    not grow past it when the zero point is 0.
    """
    nodes = [n for n in ir.nodes() if ir.same_scale(n) and ir.node_inputs(n) and ir.outputs(n)]
    for n in reversed(nodes):
        src, dst = ir.node_inputs(n)[0], ir.outputs(n)[0]
        users = [c for c in ir.consumers(src) if not ir.shape_only(c)]
        if src in qparams and dst in qparams and len(users) == 1:
            scale, zp = qparams[dst]
            if src in max_scale and zp == 0:
                scale = min(scale, max_scale[src])
            qparams[src] = qparams[dst] = (scale, zp)
    for n in nodes:
        src, dst = ir.node_inputs(n)[0], ir.outputs(n)[0]
        if src in qparams and dst in qparams:
            qparams[dst] = qparams[src]


@dataclass(frozen=True)
class ActQuant:
    """How one activation is quantized: clipping ``threshold`` (Paddle's ``@scale``), integer ``scale`` step and
    ``zero_point`` (ONNX's), and whether the pair only records a range for the runtime (``observer``)."""

    threshold: float
    scale: float
    zero_point: int
    observer: bool = False


def input_thresholds(plan: QuantPlan, sites: list[Any], calibrated: dict[str, float]) -> dict[str, tuple[float, bool]]:
    """``{activation input: (threshold, given)}`` of the quantized ops: the threshold the fake-quant layer learned
    (:attr:`QuantPlan.act_thresholds`, by weight; the last such op wins where several read one tensor), else the
    calibrated one."""
    out: dict[str, tuple[float, bool]] = {}
    for site in sites:
        if site.weight in plan.act_thresholds:
            out[site.act] = (float(plan.act_thresholds[site.weight]), True)
        elif not out.get(site.act, (0.0, False))[1]:
            out[site.act] = (float(calibrated.get(site.act, 0.0)), False)
    return out


def activation_quant(
    caps: Capabilities,
    threshold: float,
    *,
    given: bool = False,
    non_negative: bool = False,
    observed: tuple[float, float] | None = None,
    clamp: float | None = None,
    observer: bool = False,
) -> ActQuant:
    """The codes of one activation for the runtime's :attr:`Capabilities.activation_codes`.

    ``"s8"``: the symmetric ``threshold`` as is. ``"u8"``: zero point 0 and ``threshold / 255`` for a non-negative
    tensor (also one that replaced a removed ``clamp``: the threshold is cut to it); a calibrated signed tensor
    whose threshold was not given uses its observed ``(min, max)`` range, asymmetric (hardswish's
    ``[-0.375, thr]``); otherwise zero point 128 and ``threshold / 127``.
    """
    if caps.activation_codes == "s8":
        return ActQuant(threshold, threshold / 127.0, 0, observer)
    if clamp is not None:
        threshold, non_negative = min(threshold, clamp), True
    thr = max(threshold, 1e-8)
    if non_negative:
        return ActQuant(thr, thr / 255.0, 0, observer)
    if not given and observed is not None:
        lo, hi = max(-thr, min(observed[0], 0.0)), max(min(thr, observed[1]), 1e-8)
        scale = (hi - lo) / 255.0
        return ActQuant(thr, scale, int(np.clip(np.round(-lo / scale), 0, 255)), observer)
    return ActQuant(thr, thr / 127.0, 128, observer)


def insert_quantization(
    ir: GraphIR, plan: QuantPlan, sites: list[Site], pairs: dict[str, list[Any]], quant: dict[str, ActQuant]
) -> list[str]:
    """Write the INT8 model into the IR: each site's weight as int8 codes (:meth:`QuantPlan.int8_weight`) read through a
    dequantize, then a quantize/dequantize pair on each tensor of ``pairs`` for the nodes listed. Returns
    ``"op:weight"`` of the quantized ops."""
    done = []
    for site in sites:
        codes, thr = plan.int8_weight(site.weight, ir.const_value(site.weight), site.axis)
        ir.quantize_weight(site, codes, thr, quant.get(site.act))
        done.append(f"{ir.op_type(site.node)}:{site.weight}")
    for t, readers in pairs.items():
        ir.insert_qdq(t, readers, quant[t])
    return done


def _affine_step(kind: str, c: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(w, b)`` of ``conv`` followed by the affine op ``kind`` with constant ``c`` (see :meth:`AffineIR.affine_consumer`)."""
    per_channel = [1] * (w.ndim - 1)
    if kind == "mul":
        return w * c.reshape(-1, *per_channel), b * c
    if kind == "add":
        return w, b + c
    gamma, beta, mean, var_eps = c
    s = gamma / np.sqrt(var_eps)
    return w * s.reshape(-1, *per_channel), (b - mean) * s + beta


def fold_affine(ir: AffineIR) -> int:
    """Fold the conv biases, BatchNorms and element-wise constants around each conv into its filter and bias;
    returns the convs changed.

    ``conv -> +bias -> BN -> *c -> +d`` (scalars or per-channel, in any order and number) becomes one conv with
    ``w * s`` and ``b * s + t``; ``*c -> +d -> conv`` with scalars and no padding becomes ``conv(w * c, b + d * sum(w))``.
    A bias added through a reshape (Paddle 3's form of a dygraph conv bias) becomes the conv's own bias, which the
    runtimes fuse into the INT8 convolution; BN folds only where :attr:`Capabilities.fold_batch_norm` asks, scaling
    never into a :meth:`~AffineIR.frozen` filter. All of it is exact in float, and leaves each INT8 convolution
    next to its activation, so the runtimes fuse them.
    """
    done = 0
    for conv in ir.convs():
        params = ir.conv_params(conv)
        if params is None:
            continue
        w, b = params
        frozen = ir.frozen(conv)
        changed = False
        while (hit := ir.affine_consumer(ir.conv_out(conv))) is not None:
            node, kind, c = hit
            scales = kind != "add"
            if (scales and frozen) or (kind == "batch_norm" and not ir.capabilities.fold_batch_norm):
                break
            if c.shape[-1] not in (1, b.size) or (kind == "batch_norm" and c.shape[-1] != b.size):
                break
            w, b = _affine_step(kind, c, w, b)
            ir.absorb(conv, node)
            changed = True
        if not frozen and ir.unpadded(conv):
            add = ir.affine_producer(ir.conv_in(conv))
            mul = ir.affine_producer(add[3]) if add is not None and add[1] == "add" else None
            if add is not None and mul is not None and mul[1] == "mul":
                b = b + float(add[2][0]) * w.reshape(w.shape[0], -1).sum(1)
                w = w * float(mul[2][0])
                ir.bypass_input(conv, [add[0], mul[0]], mul[3])
                changed = True
        if changed:
            ir.store(conv, w, b)
            done += 1
    return done
