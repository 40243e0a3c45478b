"""Entry points: weight-only quantization, SmoothQuant, reload of a quantized state."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slim_core import ConfigError, load_state_dict, require_paddle
from slim_core.layers import set_sublayer
from slim_core.rollback import all_or_nothing, in_place
from slim_quant.weight_only.awq import awq_quantize
from slim_quant.weight_only.calibrate import RowSampler, StreamingCalibrator, find_linears, load_batches
from slim_quant.weight_only.config import DEFAULT_SKIP, SmoothQuantConfig, WeightOnlyConfig, name_matches
from slim_quant.weight_only.gptq import HessianAccumulator, gptq_quantize
from slim_quant.weight_only.layer import WeightOnlyLinear
from slim_quant.weight_only.packing import check_group_size, quantize_groups

paddle = require_paddle()

__all__ = [
    "quantize_weight_only_",
    "load_weight_only_",
    "smooth_quant_",
    "SmoothedLinear",
    "WeightOnlyReport",
    "model_bytes",
]


@dataclass
class WeightOnlyReport:
    """What :func:`quantize_weight_only_` did (also stored as ``model.slim_weight_only``)."""

    config: dict[str, Any]
    layers: list[str] = field(default_factory=list)
    rtn_fallback: list[str] = field(default_factory=list)
    kept_8bit: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _dtype(layer: Any) -> str:
    return str(layer.weight.dtype).replace("paddle.", "")


def _bias(layer: Any) -> np.ndarray | None:
    return layer.bias.numpy() if getattr(layer, "bias", None) is not None else None


def _check(model: Any, config: Any, kind: type) -> None:
    if not isinstance(config, kind):
        raise ConfigError(f"expected a {kind.__name__}, got {type(config).__name__}")
    if not isinstance(model, paddle.nn.Layer):
        raise ConfigError(f"expected a paddle.nn.Layer model, got {type(model).__name__}")


@in_place(values=False)
def quantize_weight_only_(
    model: Any,
    config: WeightOnlyConfig | None = None,
    calib_data: Any = None,
    *,
    input_names: Sequence[str] | None = None,
) -> Any:
    """Quantize the weights of every ``paddle.nn.Linear`` in place to int8 / int4.

    Each Linear becomes a :class:`WeightOnlyLinear` holding packed codes and per-group
    scales. RTN needs no data; GPTQ and AWQ calibrate layer by layer on ``calib_data``
    (streamed: each stage re-runs the batches and keeps only statistics).

    Args:
        model: a dygraph ``paddle.nn.Layer``; modified in place, after all checks passed.
        config: the :class:`WeightOnlyConfig` (default: int8 per channel, RTN).
        calib_data: batches the model is called with (arrays, tensors, tuples whose first
            items are the inputs, dicts, a DataLoader); needed by ``gptq`` and ``awq``.
        input_names: names of the model inputs in call order (default one input).

    Returns:
        The same model. ``model.slim_weight_only`` holds a :class:`WeightOnlyReport`.

    Raises:
        ConfigError: bad config, a group size that does not divide a layer's input width,
            or a skip entry that names no layer.
        DataError: missing, empty or mis-shaped calibration data (the layer and the
            widths are named).
        UnsupportedOpError: no Linear layer to quantize.

    Example:
        >>> model = paddle.nn.Sequential(paddle.nn.Linear(64, 64), paddle.nn.ReLU(), paddle.nn.Linear(64, 8))
        >>> x = np.random.rand(16, 64).astype("float32")
        >>> _ = quantize_weight_only_(model, WeightOnlyConfig(bits=4, group_size=32, algo="gptq"), calib_data=[x])
        >>> type(model[0]).__name__
        'WeightOnlyLinear'
    """
    config = config or WeightOnlyConfig()
    _check(model, config, WeightOnlyConfig)
    t0 = time.perf_counter()
    found = find_linears(model, config.skip, default_skip=DEFAULT_SKIP)
    for name, layer in found:
        check_group_size(layer.weight.shape[0], config.grid_of(name)[1], config.grid_of(name)[0], name)
    missing = [p for p in config.keep_8bit if not any(name_matches(n, p) for n, _ in found)]
    if missing:
        raise ConfigError(f"keep_8bit entries {missing} match no quantized Linear; names look like {[n for n, _ in found[:3]]}")
    batches = load_batches(calib_data, input_names, config.calib_batches) if config.needs_data else None
    if config.smooth_alpha is None:
        return _quantize(model, config, found, batches, t0)
    with all_or_nothing(model):  # smoothing rescales weights in place: a later failure restores their values too
        smooth_quant_(model, SmoothQuantConfig(config.smooth_alpha, config.skip, config.calib_batches), batches)
        return _quantize(model, config, find_linears(model, config.skip, default_skip=DEFAULT_SKIP), batches, t0)


def _quantize(model: Any, config: WeightOnlyConfig, found: list[tuple[str, Any]], batches: Any, t0: float) -> Any:
    layers = dict(found)
    report = WeightOnlyReport(
        config.to_dict(), skipped=[n for n, lyr in model.named_sublayers() if isinstance(lyr, paddle.nn.Linear) and n not in layers]
    )
    has_scale = config.algo == "awq"

    def replace(name: str, q: Any, input_scale: np.ndarray | None = None) -> None:
        layer = layers[name]
        if has_scale and input_scale is None:
            input_scale = np.ones(layer.weight.shape[0], dtype=np.float32)
        set_sublayer(model, name, WeightOnlyLinear.from_quantized(q, _bias(layer), input_scale, _dtype(layer)))
        report.layers.append(name)
        if config.grid_of(name)[0] != config.bits:
            report.kept_8bit.append(name)

    def rtn(name: str) -> Any:
        return quantize_groups(layers[name].weight.numpy(), *config.grid_of(name), config.symmetric)

    if config.algo == "rtn":
        for name in layers:
            replace(name, rtn(name))
    else:
        calibrator = StreamingCalibrator(model, layers, batches)

        def quantize_stage(stage: list[str]) -> None:
            if config.algo == "gptq":
                stats: dict[str, Any] = {n: HessianAccumulator(layers[n].weight.shape[0]) for n in stage}
            else:
                stats = {n: RowSampler(config.max_tokens, config.seed) for n in stage}
            calibrator.collect(stage, lambda n, x: stats[n].add(x))
            for n in stage:
                w = layers[n].weight.numpy()
                if config.algo == "gptq":
                    q = gptq_quantize(
                        w,
                        stats[n].h,
                        *config.grid_of(n),
                        config.symmetric,
                        damp_percent=config.damp_percent,
                        block_size=config.block_size,
                        act_order=config.act_order,
                        clip_search=config.gptq_clip,
                        name=n,
                    )
                    replace(n, q)
                else:
                    q, inv_s = awq_quantize(
                        w, stats[n].get(), *config.grid_of(n), config.symmetric, grid=config.awq_grid, clip=config.awq_clip
                    )
                    replace(n, q, inv_s)

        unused = calibrator.run(quantize_stage, desc=f"{config.algo} calibration")
        if unused:
            warnings.warn(
                f"{len(unused)} Linear layer(s) never ran on the calibration data and were rounded to nearest: {unused[:5]}", stacklevel=2
            )
        for name in unused:
            replace(name, rtn(name))
            report.rtn_fallback.append(name)
    report.seconds = time.perf_counter() - t0
    model.slim_weight_only = report
    return model


@in_place
def load_weight_only_(model: Any, state: dict[str, Any] | str, config: WeightOnlyConfig, *, allow_pickle: bool = False) -> Any:
    """Rebuild a weight-only model from a float skeleton and a saved quantized state.

    Args:
        model: the original float model architecture (weights need not be trained).
        state: a ``state_dict`` of the quantized model, or a path saved by ``paddle.save``.
        config: the config used to quantize (bits, group size, symmetry, algo, skip).
        allow_pickle: needed to read a path: ``paddle.save`` files are pickles, which can run
            code when loaded (see :func:`slim_core.load_state_dict`).

    Returns:
        The same model with :class:`WeightOnlyLinear` layers holding the saved codes.

    Example:
        >>> paddle.save(qmodel.state_dict(), "q.pdparams")            # doctest: +SKIP
        >>> load_weight_only_(build_model(), "q.pdparams", config, allow_pickle=True)  # doctest: +SKIP
    """
    _check(model, config, WeightOnlyConfig)
    if config.smooth_alpha is not None and not any(isinstance(lyr, SmoothedLinear) for lyr in model.sublayers()):
        raise ConfigError(
            "the config has smooth_alpha: the float skeleton needs the same SmoothedLinear wrappers "
            "(run smooth_quant_ on it first), or reload the exported model instead"
        )
    if isinstance(state, (str, os.PathLike)):
        state = load_state_dict(state, allow_pickle=allow_pickle)
    found = find_linears(model, config.skip, default_skip=DEFAULT_SKIP)
    for name, layer in found:
        n_in, n_out = layer.weight.shape
        new = WeightOnlyLinear(
            n_in, n_out, *config.grid_of(name), config.symmetric, layer.bias is not None, config.algo == "awq", _dtype(layer)
        )
        set_sublayer(model, name, new)
    missing, unexpected = model.set_state_dict(state)
    if missing:
        raise ConfigError(
            f"the saved state lacks {len(missing)} entries the config implies, e.g. {missing[:3]}; was it saved with this config?"
        )
    return model


def model_bytes(model: Any) -> int:
    """Bytes of all parameters and buffers as stored (int8/uint8 count one byte each)."""
    total = 0
    for t in model.state_dict().values():
        total += int(np.prod(t.shape)) * t.element_size()
    return total


class SmoothedLinear(paddle.nn.Layer):
    """``linear(x * input_scale)``: the float Linear of a SmoothQuant-migrated pair.

    The inner ``linear`` stays a plain ``paddle.nn.Linear`` (with rows multiplied by the
    smoothing factors), so a later W8A8 quantization finds and quantizes it as usual.
    """

    def __init__(self, linear: Any, input_scale: np.ndarray) -> None:
        super().__init__()
        self.linear = linear
        self.register_buffer("input_scale", paddle.to_tensor(np.asarray(input_scale, dtype=np.float32)).astype(linear.weight.dtype))

    def forward(self, x: Any) -> Any:
        return self.linear(x * self.input_scale)


@in_place
def smooth_quant_(
    model: Any,
    config: SmoothQuantConfig | None = None,
    calib_data: Any = None,
    *,
    input_names: Sequence[str] | None = None,
) -> Any:
    """Migrate activation outliers of every Linear into its weight (SmoothQuant), in place.

    With ``s = max|x|^alpha / max|w_row|^(1 - alpha)`` per input channel, weight rows are
    multiplied by ``s`` and the input by ``1 / s``: the float function is unchanged while
    the activation range flattens, so a W8A8 quantization that follows (PTQ or QAT) loses
    less. Each Linear is wrapped in a :class:`SmoothedLinear`.

    Args:
        model: dygraph model, modified in place after the checks.
        config: :class:`SmoothQuantConfig` (``alpha``, ``skip``).
        calib_data: batches to measure channel maxima on.
        input_names: model input names in call order.

    Returns:
        The same model.

    Example:
        >>> model = paddle.nn.Sequential(paddle.nn.Linear(16, 8))
        >>> _ = smooth_quant_(model, SmoothQuantConfig(alpha=0.5), [np.random.rand(4, 16).astype("float32")])
        >>> type(model[0]).__name__
        'SmoothedLinear'
    """
    config = config or SmoothQuantConfig()
    _check(model, config, SmoothQuantConfig)
    found = dict(find_linears(model, config.skip, default_skip=DEFAULT_SKIP))
    batches = load_batches(calib_data, input_names, config.calib_batches)
    calibrator = StreamingCalibrator(model, found, batches)
    amax: dict[str, np.ndarray] = {}

    def observe(name: str, x: np.ndarray) -> None:
        m = np.abs(x).max(axis=0)
        amax[name] = np.maximum(amax[name], m) if name in amax else m

    # SmoothQuant keeps the float function, so all layers can be measured in one pass.
    stages, _ = calibrator.stages()
    calibrator.collect([n for s in stages for n in s], observe)
    # Linears reading the same tensor (q/k/v) share one factor vector, as if it were folded into the op
    # that produces the tensor: the export then needs a single Mul for them (identical Muls are merged).
    for stage in stages:
        stage = [n for n in stage if n in amax]
        if not stage:
            continue
        a_max = amax[stage[0]]
        w_max = np.max([np.abs(found[n].weight.numpy()).max(axis=1) for n in stage], axis=0)
        s = np.power(np.maximum(a_max, 1e-5), config.alpha) / np.power(np.maximum(w_max, 1e-5), 1.0 - config.alpha)
        s = np.where(a_max > 0, s, 1.0).astype(np.float32)
        for name in stage:
            layer = found[name]
            layer.weight.set_value(paddle.to_tensor(layer.weight.numpy() * s[:, None]).astype(layer.weight.dtype))
            set_sublayer(model, name, SmoothedLinear(layer, 1.0 / s))
    return model
