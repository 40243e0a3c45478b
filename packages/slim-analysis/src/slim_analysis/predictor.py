"""Table-based latency prediction.

The user builds a per-op latency table on their own device, once
(``slim analyze --build-latency-table table.json``): every distinct op
*signature* (op type, input shapes, the attributes that change the kernel) of
the given models is run alone through Paddle Inference (or ONNX Runtime / OpenVINO:
``backend=``) and timed. The table is
JSON (never pickle). ``predict(model)`` traces a model and sums the table over
its ops; ops whose exact signature is missing fall back to a per-op-type fit
``ms = a + b * MFLOPs`` from the table.

Running an op alone costs more than running it inside a whole model: each run
of a one-op program pays the executor's fixed cost (measured on a trivial op
and subtracted from every entry), and Paddle Inference fuses conv + batch norm
+ activation inside a model. So ``build`` also times the
whole models it was given and stores one ``scale`` factor (measured / summed)
that ``predict`` applies. Evaluate the predictor on models it was not built on.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slim_analysis._model import graph_of
from slim_analysis.flops import node_flops
from slim_analysis.latency import LatencyConfig, exported_model, make_runner, time_runner
from slim_core import ConfigError, DataError, ModelGraph, ModelLoadError, atomic_write, progress, require_paddle
from slim_core.graph import Node

__all__ = ["LatencyPredictor", "Prediction", "op_signature", "OP_BUILDERS", "TABLE_FORMAT"]

TABLE_FORMAT = "slim-latency-table/1"
_KEY_ATTRS = (
    "strides",
    "paddings",
    "dilations",
    "groups",
    "padding_algorithm",
    "data_format",
    "pooling_type",
    "ceil_mode",
    "exclusive",
    "global_pooling",
    "adaptive",
    "transpose_x",
    "transpose_y",
    "axis",
    "begin_norm_axis",
)


def _shape(v: Any) -> list[int] | None:
    return [int(d) for d in v.shape] if v is not None and v.shape is not None else None


def _const(v: Any) -> Any:
    from slim_core.graph.rules import const_value

    return const_value(v)


def op_signature(node: Node) -> str | None:
    """A string that identifies the kernel work of ``node``; None for ops that are not timed (no builder)."""
    if node.type not in OP_BUILDERS:
        return None
    ins = [_shape(v) for v in node.inputs if v is not None and v.shape is not None and v.is_float]
    attrs = {k: node.attrs[k] for k in _KEY_ATTRS if k in node.attrs}
    if node.type == "pd_op.pool2d" and len(node.inputs) > 1:
        attrs["kernel_size"] = _const(node.inputs[1])
    return json.dumps([node.type, ins, _shape(node.output), attrs], sort_keys=True, separators=(",", ":"))


# -- single-op builders: signature -> (Layer, input shapes) ---------------------------------
def _conv_layer(sig: list[Any]) -> tuple[Any, list[list[int]]]:
    paddle = require_paddle()
    F = paddle.nn.functional
    _type, ins, _out, attrs = sig
    x, w = ins[0], ins[1]
    pads = attrs.get("paddings", [0, 0])
    algo = attrs.get("padding_algorithm", "EXPLICIT")
    padding: Any = algo if algo in ("SAME", "VALID") else pads

    class Op(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.w = self.create_parameter(w)

        def forward(self, t: Any) -> Any:
            return F.conv2d(
                t,
                self.w,
                stride=attrs.get("strides", 1),
                padding=padding,
                dilation=attrs.get("dilations", 1),
                groups=attrs.get("groups", 1),
                data_format=attrs.get("data_format", "NCHW"),
            )

    return Op(), [x]


def _matmul_layer(sig: list[Any]) -> tuple[Any, list[list[int]]]:
    paddle = require_paddle()
    _type, ins, _out, attrs = sig
    tx, ty = attrs.get("transpose_x", False), attrs.get("transpose_y", False)

    class Op(paddle.nn.Layer):
        def forward(self, a: Any, b: Any) -> Any:
            return paddle.matmul(a, b, transpose_x=tx, transpose_y=ty)

    return Op(), [ins[0], ins[1]]


def _bn_layer(sig: list[Any]) -> tuple[Any, list[list[int]]]:
    paddle = require_paddle()
    x = sig[1][0]
    layer = paddle.nn.BatchNorm2D(x[1]) if len(x) == 4 else paddle.nn.BatchNorm1D(x[1])
    return layer, [x]


def _ln_layer(sig: list[Any]) -> tuple[Any, list[list[int]]]:
    paddle = require_paddle()
    x = sig[1][0]
    begin = int(sig[3].get("begin_norm_axis", len(x) - 1)) % len(x)
    return paddle.nn.LayerNorm(x[begin:]), [x]


def _pool_layer(sig: list[Any]) -> tuple[Any, list[list[int]]]:
    paddle = require_paddle()
    F = paddle.nn.functional
    _type, ins, out, attrs = sig
    x = ins[0]
    kind = attrs.get("pooling_type", "max")

    class Op(paddle.nn.Layer):
        def forward(self, t: Any) -> Any:
            if attrs.get("global_pooling") or attrs.get("adaptive"):
                fn = F.adaptive_avg_pool2d if kind == "avg" else F.adaptive_max_pool2d
                return fn(t, out[2:])
            ks = attrs.get("kernel_size") or [1, 1]
            pads = attrs.get("paddings", [0, 0])
            if kind == "avg":
                return F.avg_pool2d(
                    t, ks, attrs.get("strides", ks), pads, ceil_mode=attrs.get("ceil_mode", False), exclusive=attrs.get("exclusive", True)
                )
            return F.max_pool2d(t, ks, attrs.get("strides", ks), pads, ceil_mode=attrs.get("ceil_mode", False))

    return Op(), [x]


def _binary_layer(name: str) -> Any:
    def build(sig: list[Any]) -> tuple[Any, list[list[int]]]:
        paddle = require_paddle()
        fn = getattr(paddle, name)
        ins = sig[1]

        class Op(paddle.nn.Layer):
            def forward(self, a: Any, b: Any) -> Any:
                return fn(a, b)

        if len(ins) < 2:
            return None, []
        return Op(), [ins[0], ins[1]]

    return build


def _unary_layer(fn_name: str) -> Any:
    def build(sig: list[Any]) -> tuple[Any, list[list[int]]]:
        paddle = require_paddle()
        fn = getattr(paddle.nn.functional, fn_name)

        class Op(paddle.nn.Layer):
            def forward(self, t: Any) -> Any:
                return fn(t)

        return Op(), [sig[1][0]]

    return build


OP_BUILDERS: dict[str, Any] = {
    "pd_op.conv2d": _conv_layer,
    "pd_op.depthwise_conv2d": _conv_layer,
    "pd_op.matmul": _matmul_layer,
    "pd_op.batch_norm_": _bn_layer,
    "pd_op.batch_norm": _bn_layer,
    "pd_op.layer_norm": _ln_layer,
    "pd_op.pool2d": _pool_layer,
    "pd_op.add": _binary_layer("add"),
    "pd_op.multiply": _binary_layer("multiply"),
    "pd_op.subtract": _binary_layer("subtract"),
    "pd_op.relu": _unary_layer("relu"),
    "pd_op.relu6": _unary_layer("relu6"),
    "pd_op.hardswish": _unary_layer("hardswish"),
    "pd_op.hardsigmoid": _unary_layer("hardsigmoid"),
    "pd_op.swish": _unary_layer("swish"),
    "pd_op.sigmoid": _unary_layer("sigmoid"),
    "pd_op.gelu": _unary_layer("gelu"),
    "pd_op.softmax": _unary_layer("softmax"),
}
"""``{op type: builder(signature list) -> (Layer, input shapes)}`` used to time one op alone."""


@dataclass
class Prediction:
    """Result of :meth:`LatencyPredictor.predict`.

    Attributes:
        total_ms: predicted latency (scaled sum plus the per-run overhead).
        raw_sum_ms: unscaled sum over the ops.
        per_op: ``[(node index, op type, ms, source)]`` with source ``"table"`` or ``"fit"``.
        unpredicted: op types that have no table entry and no fit (counted as 0).
    """

    total_ms: float
    raw_sum_ms: float
    per_op: list[tuple[int, str, float, str]] = field(default_factory=list)
    unpredicted: dict[str, int] = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        """Share of timed ops whose exact signature was in the table."""
        n = len(self.per_op)
        return sum(1 for p in self.per_op if p[3] == "table") / n if n else 0.0


def _device() -> dict[str, Any]:
    paddle = require_paddle()
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "system": platform.system(),
        "cpu_count": os.cpu_count(),
        "paddle": paddle.__version__,
    }


class LatencyPredictor:
    """Per-op latency table with ``predict(model)``.

    Build it on the device you care about with :meth:`build`, save it with :meth:`save`
    (JSON), load it anywhere with :meth:`load`.

    Example:
        >>> p = LatencyPredictor.build([(net, [1, 3, 224, 224])], threads=1)   # doctest: +SKIP
        >>> p.save("table.json")                                                 # doctest: +SKIP
        >>> LatencyPredictor.load("table.json").predict(other, [1, 3, 224, 224]).total_ms  # doctest: +SKIP
    """

    def __init__(
        self,
        entries: dict[str, float],
        *,
        threads: int = 1,
        backend: str = "paddle",
        scale: float = 1.0,
        overhead_ms: float = 0.0,
        device: dict[str, Any] | None = None,
        flops_by_sig: dict[str, int] | None = None,
    ) -> None:
        self.entries = dict(entries)
        self.threads = int(threads)
        self.backend = str(backend)
        self.scale = float(scale)
        self.overhead_ms = float(overhead_ms)
        self.device = device or {}
        self.flops_by_sig = dict(flops_by_sig or {})
        self.fits = self._fit()

    # -- fitting -----------------------------------------------------------------------
    def _fit(self) -> dict[str, tuple[float, float]]:
        by_type: dict[str, list[tuple[float, float]]] = {}
        for sig, ms in self.entries.items():
            t = json.loads(sig)[0]
            by_type.setdefault(t, []).append((self.flops_by_sig.get(sig, 0) / 1e6, ms))
        fits = {}
        for t, pts in by_type.items():
            xs = np.array([p[0] for p in pts])
            ys = np.array([p[1] for p in pts])
            if len(pts) >= 2 and np.ptp(xs) > 0:
                b, a = np.polyfit(xs, ys, 1)
                fits[t] = (float(max(a, 0.0)), float(max(b, 0.0)))
            else:
                fits[t] = (float(ys.mean()), 0.0)
        return fits

    # -- building ----------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        models: list[tuple[Any, Any]],
        *,
        threads: int = 1,
        backend: str = "paddle",
        warmup: int = 3,
        repeats: int = 10,
        max_signatures: int | None = None,
        calibrate: bool = True,
    ) -> LatencyPredictor:
        """Time every distinct op signature of ``models`` alone on this machine.

        Args:
            models: ``[(Layer or inference-model path, input_shape), ...]``.
            threads: CPU threads (use the number you will deploy with).
            backend: the runtime to time on: ``"paddle"`` (default), ``"onnxruntime"`` or ``"openvino"``
            (each op is converted to ONNX for the last two; their extras must be installed).
            warmup, repeats: runs per op (the fastest run is stored: robust to other load on the machine).
            max_signatures: time at most this many signatures (the most frequent first); others use fits.
            calibrate: also time the whole models and store the measured / summed ratio as ``scale``.

        Raises:
            ConfigError: empty ``models`` or bad numbers.
        """
        if not models:
            raise ConfigError("build() needs at least one (model, input_shape) pair")
        if threads < 1 or repeats < 1 or warmup < 0:
            raise ConfigError(f"threads and repeats must be >= 1 and warmup >= 0 (got {threads}, {repeats}, {warmup})")
        cfg = LatencyConfig(threads=threads, backend=backend, warmup=warmup, repeats=repeats)  # type: ignore[arg-type]
        graphs = [(m, s, graph_of(m, s)) for m, s in models]
        counts: dict[str, int] = {}
        flops_by_sig: dict[str, int] = {}
        for _m, _s, g in graphs:
            for n in g.nodes:
                sig = op_signature(n)
                if sig is not None:
                    counts[sig] = counts.get(sig, 0) + 1
                    flops_by_sig[sig] = node_flops(n)
        sigs = sorted(counts, key=lambda k: -counts[k])
        if max_signatures is not None:
            sigs = sigs[:max_signatures]
        # a one-op program still pays the executor's fixed cost per run; inside a model that cost is
        # paid once, so it is measured on a trivial op and taken off every entry
        dispatch = _time_overhead(cfg, kernel_only=True)
        entries: dict[str, float] = {}
        for sig in progress(sigs, desc="timing ops", total=len(sigs)):
            ms = _time_signature(sig, cfg)
            if ms is not None:
                entries[sig] = max(ms - dispatch, 0.05 * ms)
        overhead = _time_overhead(cfg)
        pred = cls(entries, threads=threads, backend=backend, overhead_ms=overhead, device=_device(), flops_by_sig=flops_by_sig)
        if calibrate:
            measured, summed = 0.0, 0.0
            for m, s, g in graphs:
                measured += _time_model(m, s, cfg) - overhead
                summed += pred._raw(g)[0]
            if summed > 0 and measured > 0:
                pred.scale = measured / summed
        return pred

    # -- prediction --------------------------------------------------------------------
    def _raw(self, g: ModelGraph) -> tuple[float, list[tuple[int, str, float, str]], dict[str, int]]:
        per_op: list[tuple[int, str, float, str]] = []
        missing: dict[str, int] = {}
        total = 0.0
        for n in g.nodes:
            sig = op_signature(n)
            if sig is not None and sig in self.entries:
                ms, src = self.entries[sig], "table"
            elif n.type in self.fits:
                a, b = self.fits[n.type]
                ms, src = a + b * node_flops(n) / 1e6, "fit"
            else:
                if node_flops(n) > 0:
                    missing[n.type] = missing.get(n.type, 0) + 1
                continue
            per_op.append((n.index, n.type, ms, src))
            total += ms
        return total, per_op, missing

    def predict(self, model: Any, input_shape: Any = None, *, example_inputs: Any = None) -> Prediction:
        """Predict the latency of ``model`` (Layer, ModelGraph or inference-model path) in ms."""
        g = graph_of(model, input_shape, example_inputs)
        raw, per_op, missing = self._raw(g)
        return Prediction(total_ms=raw * self.scale + self.overhead_ms, raw_sum_ms=raw, per_op=per_op, unpredicted=missing)

    # -- persistence -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT,
            "device": self.device,
            "threads": self.threads,
            "backend": self.backend,
            "scale": self.scale,
            "overhead_ms": self.overhead_ms,
            "entries": [{"signature": json.loads(k), "ms": v, "flops": self.flops_by_sig.get(k, 0)} for k, v in self.entries.items()],
        }

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
        """Write the table as JSON (atomically)."""
        p = Path(path)
        with atomic_write(p, overwrite=overwrite) as fh:
            fh.write(json.dumps(self.to_dict(), indent=1))
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatencyPredictor:
        """Read a table written by :meth:`save`.

        Raises:
            ModelLoadError: missing file, not JSON, or not a slim latency table.
        """
        p = Path(path)
        if not p.is_file():
            raise ModelLoadError(f"latency table not found: {p}")
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"latency table {p} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise ModelLoadError(f"{p} is not a slim latency table (expected format {TABLE_FORMAT!r})")
        try:
            entries = {json.dumps(e["signature"], sort_keys=True, separators=(",", ":")): float(e["ms"]) for e in data["entries"]}
            flops_by = {json.dumps(e["signature"], sort_keys=True, separators=(",", ":")): int(e.get("flops", 0)) for e in data["entries"]}
            return cls(
                entries,
                threads=int(data["threads"]),
                backend=str(data.get("backend", "paddle")),
                scale=float(data["scale"]),
                overhead_ms=float(data["overhead_ms"]),
                device=dict(data.get("device", {})),
                flops_by_sig=flops_by,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"latency table {p} is damaged: {exc!r}") from exc


def _time_layer(layer: Any, shapes: list[list[int]], cfg: LatencyConfig, kernel_only: bool = True) -> float:
    rng = np.random.default_rng(0)
    with exported_model(layer, shapes) as prefix:
        runner = make_runner(prefix, cfg)
        arrays = [rng.standard_normal(s).astype("float32") for s in shapes]
        if kernel_only:
            # an op inside a model gets its input from the previous op: time the run without input/output copies
            runner.feed(arrays)
            times = time_runner(lambda _a: runner.run_fed(), arrays, cfg.warmup, cfg.repeats)
        else:
            times = time_runner(runner, arrays, cfg.warmup, cfg.repeats)
        runner.close()
    # the minimum is the least disturbed by other processes on a shared machine
    return float(np.min(times) * 1000.0)


def _time_signature(sig: str, cfg: LatencyConfig) -> float | None:
    parsed = json.loads(sig)
    builder = OP_BUILDERS.get(parsed[0])
    if builder is None:
        return None
    layer, shapes = builder(parsed)
    if layer is None or not shapes or any(d < 0 for s in shapes for d in s):
        return None
    try:
        return _time_layer(layer, shapes, cfg)
    except Exception:  # an op config the runtime rejects alone is left to the per-type fit
        return None


def _time_overhead(cfg: LatencyConfig, kernel_only: bool = False) -> float:
    paddle = require_paddle()

    class Tiny(paddle.nn.Layer):  # one trivial op: the fixed cost of a predictor run
        def forward(self, t: Any) -> Any:
            return paddle.nn.functional.relu(t)

    return _time_layer(Tiny(), [[1, 8]], cfg, kernel_only=kernel_only)


def _time_model(model: Any, shape: Any, cfg: LatencyConfig) -> float:
    from slim_analysis._model import normalize_shapes

    shapes = normalize_shapes(shape)
    if shapes is None:
        raise DataError("input_shape is required to time a model")
    return _time_layer(model, shapes, cfg, kernel_only=False)
