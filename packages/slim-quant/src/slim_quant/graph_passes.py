"""INT8 rewrite plan and passes written once, over a small backend interface (the NNCF shape).

The Paddle legacy program (oneDNN INT8, :mod:`slim_quant.paddle_int8`) and the ONNX graph (QDQ,
:mod:`slim_quant.onnx_qdq`) are rewritten from one :class:`QuantPlan` by the same algorithms; each
backend only reads and edits its own IR (through the methods of :class:`AffineIR` for the folds):

- :class:`QuantPlan`: which weights are quantized, their int8 codes and thresholds (from the dygraph
  fake-quant layers or computed here), the input thresholds they learned, the activation calibrator;
- :func:`weight_axis`: the output-channel axis of a quantized op's weight, for every IR;
- :func:`fold_affine`: learnable affine blocks next to a convolution (PP-LCNet's ``conv -> *a + b`` and
  ``*c + d -> conv 1x1``) folded exactly into the conv's filter and bias.

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

__all__ = ["QuantPlan", "AffineIR", "fold_affine", "weight_axis", "WEIGHT_KINDS", "QDQ_TARGETS"]

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


class AffineIR(Protocol):
    """What :func:`fold_affine` needs from an IR. Tensors are names, nodes are the IR's own op objects."""

    def convs(self) -> list[Any]:
        """The 2-D convolutions, in graph order."""

    def conv_params(self, conv: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """The float64 filter and bias (zeros when the conv has none and the IR can add one), or None when
        either is not a constant used only by this conv (or must not change)."""

    def conv_out(self, conv: Any) -> str:
        """The tensor holding ``conv(x) + bias``."""

    def conv_in(self, conv: Any) -> str:
        """The conv's activation input."""

    def unpadded(self, conv: Any) -> bool:
        """No padding: a constant added to the input reaches every output as ``d * sum(w)``."""

    def affine_consumer(self, t: str) -> tuple[Any, str, np.ndarray] | None:
        """When ``t``'s only consumer computes ``t * c`` or ``t + c`` with a constant ``c`` that is a scalar or one
        value per channel (axis 1): ``(node, "mul" | "add", c as a 1-D array)``."""

    def affine_producer(self, t: str) -> tuple[Any, str, np.ndarray, str] | None:
        """When ``t`` has one consumer and is ``x * c`` or ``x + c`` with a scalar constant ``c``:
        ``(node, "mul" | "add", c as a 1-D array, x)``."""

    def absorb(self, conv: Any, node: Any) -> None:
        """Remove ``node`` (which reads :meth:`conv_out`): the conv chain now writes ``node``'s output."""

    def bypass_input(self, conv: Any, nodes: list[Any], src: str) -> None:
        """Remove ``nodes`` (the chain feeding the conv): the conv reads ``src``."""

    def store(self, conv: Any, w: np.ndarray, b: np.ndarray) -> None:
        """Write the new filter and bias."""


def fold_affine(ir: AffineIR) -> int:
    """Fold element-wise constants around each conv into its filter and bias; returns the convs changed.

    ``conv -> *c -> +d`` (scalars or per-channel, in any order and number) becomes ``conv(w * c, b * c + d)``;
    ``*c -> +d -> conv`` with scalars and no padding becomes ``conv(w * c, b + d * sum(w))``. Both are exact in
    float; they leave each INT8 convolution next to its activation, so the runtimes fuse them.
    """
    done = 0
    for conv in ir.convs():
        params = ir.conv_params(conv)
        if params is None:
            continue
        w, b = params
        changed = False
        while (hit := ir.affine_consumer(ir.conv_out(conv))) is not None:
            node, kind, c = hit
            if c.size not in (1, w.shape[0]):
                break
            if kind == "mul":
                w, b = w * c.reshape(-1, *([1] * (w.ndim - 1))), b * c
            else:
                b = b + c
            ir.absorb(conv, node)
            changed = True
        if ir.unpadded(conv):
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
