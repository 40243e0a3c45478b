"""Per-layer quantization sensitivity: which layer costs accuracy when quantized.

:func:`quant_sensitivity` quantizes the model once (calibration shared), then for
every quantized layer measures the metric with **only that layer** quantized and
with **all but that layer** quantized. Without an ``eval_fn`` the metric is the
relative output error against the float model on ``data`` (lower is better).
The report ranks layers, saves JSON and draws an SVG bar chart (no plotting
library needed).

Example:
    >>> rep = quant_sensitivity(model, calib, eval_fn=lambda m: accuracy(m))   # doctest: +SKIP
    >>> rep.ranked()[:3]                                                        # doctest: +SKIP
    >>> rep.save("sens.json"); rep.plot("sens.svg")                             # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from html import escape
from typing import Any

import numpy as np
import paddle

from slim_core.atomic import atomic_write
from slim_core.errors import ConfigError
from slim_core.progress import progress
from slim_quant.config import PTQConfig
from slim_quant.layers import quanted_layers
from slim_quant.ptq import calibration_batches, quantize, run_model, set_mode

__all__ = ["quant_sensitivity", "SensitivityReport", "LayerSensitivity"]


@dataclass
class LayerSensitivity:
    """Sensitivity of one layer.

    Attributes:
        layer: sublayer path.
        type: layer class name.
        only: metric with only this layer quantized.
        all_but: metric with every quantized layer but this one.
        cost: metric lost by quantizing only this layer (positive = worse).
        gain: metric recovered by keeping only this layer in float (positive = better).
    """

    layer: str
    type: str
    only: float
    all_but: float
    cost: float
    gain: float


@dataclass
class SensitivityReport:
    """Result of :func:`quant_sensitivity`."""

    metric: str
    higher_is_better: bool
    float_metric: float
    quantized_metric: float
    layers: list[LayerSensitivity] = field(default_factory=list)

    def ranked(self) -> list[LayerSensitivity]:
        """Layers from most to least sensitive (by cost, ties broken by gain)."""
        return sorted(self.layers, key=lambda r: (r.cost, r.gain), reverse=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "float_metric": self.float_metric,
            "quantized_metric": self.quantized_metric,
            "layers": [asdict(r) for r in self.ranked()],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the report as JSON (atomically)."""
        with atomic_write(path) as fh:
            json.dump(self.to_dict(), fh, indent=2)

    def plot(self, path: str | os.PathLike[str], top: int = 30) -> None:
        """Write an SVG bar chart of the ``top`` most sensitive layers (cost and gain)."""
        rows = self.ranked()[:top]
        peak = max([abs(r.cost) for r in rows] + [abs(r.gain) for r in rows] + [1e-12])
        w, bar, left = 760, 18, 260
        h = 40 + len(rows) * (bar + 6)
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
            f'<text x="4" y="16">quantization sensitivity ({escape(self.metric)}): cost of quantizing only this layer'
            " (red), gain of keeping only it in float (blue)</text>",
        ]
        for i, r in enumerate(rows):
            y = 30 + i * (bar + 6)
            cw = max(0.0, r.cost) / peak * (w - left - 20)
            gw = max(0.0, r.gain) / peak * (w - left - 20)
            parts.append(f'<text x="4" y="{y + 12}">{escape(r.layer)} ({escape(r.type)})</text>')
            parts.append(f'<rect x="{left}" y="{y}" width="{cw:.1f}" height="{bar / 2:.0f}" fill="#c0392b"/>')
            parts.append(f'<rect x="{left}" y="{y + bar / 2:.0f}" width="{gw:.1f}" height="{bar / 2:.0f}" fill="#2e86c1"/>')
            parts.append(f'<text x="{left + max(cw, gw) + 4:.1f}" y="{y + 12}">{r.cost:.4g} / {r.gain:.4g}</text>')
        parts.append("</svg>")
        with atomic_write(path) as fh:
            fh.write("\n".join(parts))


def _output_error_fn(model: Any, batches: list[dict[str, np.ndarray]], names: Sequence[str]) -> Callable[[Any], float]:
    set_mode(model, "float")
    with paddle.no_grad():
        refs = [np.asarray(_first(run_model(model, b, names)).numpy()) for b in batches]

    def err(m: Any) -> float:
        num = den = 0.0
        with paddle.no_grad():
            for b, ref in zip(batches, refs):
                out = np.asarray(_first(run_model(m, b, names)).numpy())
                num += float(((out - ref) ** 2).sum())
                den += float((ref**2).sum())
        return float(np.sqrt(num / max(den, 1e-30)))

    return err


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (list, tuple)) else out


def quant_sensitivity(
    model: Any,
    calib_data: Any,
    eval_fn: Callable[[Any], float] | None = None,
    data: Any = None,
    config: PTQConfig | None = None,
    *,
    input_names: Sequence[str] | None = None,
    format: str | None = None,
    threads: int = 2,
) -> SensitivityReport:
    """Rank layers (or, for an inference model, quantized ops) by what quantizing them costs.

    Args:
        model: the float ``paddle.nn.Layer`` (left unchanged: a copy is quantized), or the path of a
            Paddle inference model: then every quantizable op (named by its weight, e.g. ``"conv2d_3.w_0"``)
            is measured on the INT8 runtime of ``format``, calibration shared.
        calib_data: calibration data (as for :func:`slim_quant.quantize_`).
        eval_fn: ``eval_fn(model) -> metric`` (for an inference model ``eval_fn(predictor)``, a
            :class:`slim_deploy.Predictor`); direction from ``config.higher_is_better``.
        data: without ``eval_fn``, batches on which the output error against the float model is measured
            (default: the calibration batches).
        config: the PTQ config to study (``max_metric_drop`` is ignored).
        input_names: model input names for tuple/list batches.
        format: for an inference model, the runtime measured: ``"paddle"`` (oneDNN INT8, the default for
            legacy programs) or ``"onnx"`` (ONNX Runtime QDQ, the default for PIR programs).
        threads: CPU threads of that runtime.

    Returns:
        A :class:`SensitivityReport` (``ranked()``, ``save(json)``, ``plot(svg)``).

    Raises:
        ConfigError / DataError / UnsupportedOpError: as :func:`slim_quant.quantize_` and
        :func:`slim_quant.quantize_inference_model`.
    """
    config = (config or PTQConfig(fold_bn=not isinstance(model, (str, os.PathLike)))).replace(max_metric_drop=None)
    if eval_fn is not None and not callable(eval_fn):
        raise ConfigError("eval_fn must be a callable eval_fn(model) -> float")
    if isinstance(model, (str, os.PathLike)):
        return _inference_sensitivity(model, calib_data, eval_fn, data, config, format, threads)
    if format is not None:
        raise ConfigError("format is for inference models; a Layer is measured as the fake-quantized dygraph model")
    q = quantize(model, config, calib_data, input_names=input_names)
    st = q.slim_quant_state
    if eval_fn is None:
        batches = st.calib if data is None else calibration_batches(data, st.input_names, 10_000)
        metric_fn = _output_error_fn(q, batches, st.input_names)
        name, higher = "relative output error", False
    else:
        metric_fn, name, higher = eval_fn, "eval_fn", config.higher_is_better
    sign = 1.0 if higher else -1.0
    layers = quanted_layers(q)
    set_mode(q, "float")
    base = float(metric_fn(q))
    set_mode(q, "quant")
    full = float(metric_fn(q))
    rows = []
    for lname, layer in progress(list(layers.items()), desc="sensitivity"):
        set_mode(q, "float")
        layer.mode = "quant"
        only = float(metric_fn(q))
        set_mode(q, "quant")
        layer.mode = "float"
        all_but = float(metric_fn(q))
        layer.mode = "quant"
        rows.append(LayerSensitivity(lname, type(layer.inner).__name__, only, all_but, sign * (base - only), sign * (all_but - full)))
    return SensitivityReport(name, higher, base, full, rows)


def _inference_sensitivity(
    path: Any, calib_data: Any, eval_fn: Callable[[Any], float] | None, data: Any, config: PTQConfig, fmt: str | None, threads: int
) -> SensitivityReport:
    import tempfile
    from pathlib import Path

    from slim_core.model_io import load_inference_model
    from slim_quant.export import _check_inference_config, _config_skips, _RuntimeBuilder

    _check_inference_config(config, eval_fn)
    src = load_inference_model(path)
    fmt = fmt or ("paddle" if src.format == "legacy" else "onnx")
    if fmt not in ("paddle", "onnx"):
        raise ConfigError(f"format {fmt!r} is not supported; use 'paddle' or 'onnx'")
    batches = calibration_batches(calib_data, src.input_names, config.calib_batches)
    skip = _config_skips(src, config, (fmt,))
    names = src.input_names
    if eval_fn is None:
        feeds = batches if data is None else calibration_batches(data, names, 10_000)
        refs = [np.asarray(src.run({n: b[n] for n in names})[0]) for b in feeds]

        def metric_fn(pred: Any) -> float:
            num = den = 0.0
            for b, ref in zip(feeds, refs):
                out = np.asarray(pred.run([b[n] for n in names])[0])
                num += float(((out - ref) ** 2).sum())
                den += float((ref**2).sum())
            return float(np.sqrt(num / max(den, 1e-30)))

        name, higher = "relative output error", False
    else:
        metric_fn, name, higher = eval_fn, "eval_fn", config.higher_is_better
    sign = 1.0 if higher else -1.0
    with tempfile.TemporaryDirectory(prefix="slim-sens-") as work:
        builder = _RuntimeBuilder(src, fmt, batches, config, Path(work), threads)
        types, base, full = builder.start(skip, metric_fn)
        rows = []
        for w in progress(list(types), desc="sensitivity"):
            only = builder.measure(metric_fn, skip | (set(types) - {w}))
            all_but = builder.measure(metric_fn, skip | {w})
            rows.append(LayerSensitivity(w, types[w], only, all_but, sign * (base - only), sign * (all_but - full)))
    return SensitivityReport(name, higher, base, full, rows)
