"""``prepare_qat`` and ``convert``: quantization-aware training in a normal Paddle loop."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paddle

from slim_core import ConfigError, UnsupportedOpError
from slim_core.layers import set_sublayer
from slim_quant.calibrators import make_calibrator
from slim_quant.config import PTQConfig
from slim_quant.layers import QuantedLayer, quanted_layers
from slim_quant.primitives import quantize_np, weight_thresholds
from slim_quant.ptq import QuantState, calibration_batches, check_skip_layers, input_specs, quant_candidates, run_model
from slim_quant.qat.config import QATConfig
from slim_quant.qat.layers import QATLayer, qat_layers

__all__ = ["prepare_qat", "convert", "QATState"]


@dataclass
class QATState:
    """What :func:`prepare_qat` did, attached to the model as ``model.slim_qat_state``."""

    config: QATConfig
    input_names: list[str]
    calib: list[dict[str, np.ndarray]] = field(repr=False)
    layers: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    folded_bn: list[tuple[str, str]] = field(default_factory=list)


def _conv_bn_pairs(model: Any, picked: list[str], batch: dict[str, np.ndarray], names: Sequence[str]) -> list[tuple[str, str]]:
    """Conv2D -> BatchNorm2D pairs (NCHW) proven on the traced program, restricted to layers QAT wraps."""
    from slim_core.bn_fold import find_linear_bn_pairs

    subs = dict(model.named_sublayers())
    pairs = []
    for p in find_linear_bn_pairs(model, input_specs(batch, names)):
        conv, bn = subs.get(p.linear), subs.get(p.bn)
        if (
            p.linear in picked
            and isinstance(conv, paddle.nn.Conv2D)
            and isinstance(bn, paddle.nn.BatchNorm2D)
            and getattr(conv, "_data_format", "NCHW") == "NCHW"
            and getattr(bn, "_data_format", "NCHW") == "NCHW"
        ):
            pairs.append((p.linear, p.bn))
    return pairs


def prepare_qat(
    model: Any,
    config: QATConfig | None = None,
    calib_data: Any = None,
    *,
    input_names: Sequence[str] | None = None,
) -> Any:
    """A copy of ``model`` with trainable fake quantization on every Conv2D / Linear.

    Train the returned model with any Paddle loop (optimizer over ``qmodel.parameters()``,
    which includes LSQ steps and PACT clips), optionally wrapped in ``paddle.DataParallel``,
    then call :func:`convert`.

    Args:
        model: a float ``paddle.nn.Layer``; it is not modified.
        config: the :class:`QATConfig` (default: W8A8, abs-max weights, moving-average activations, BN folded).
        calib_data: a few input batches (any form :class:`slim_core.Batches` takes). They trace
            the model to find conv -> BN pairs, initialize the activation ranges, seed
            ``init_from_ptq``, and are kept for export.
        input_names: model input names when batches hold several arrays.

    Returns:
        The QAT model, holding :class:`~slim_quant.qat.layers.QATLayer` wrappers and a
        ``slim_qat_state`` (:class:`QATState`).

    Raises:
        ConfigError: bad config or a skip name that is no layer.
        DataError: empty, NaN/inf or mis-shaped calibration data.
        UnsupportedOpError: the model has no quantizable layer.

    Example:
        >>> from slim_core import demo
        >>> model, _ = demo.train_demo_model(epochs=1)
        >>> x, _ = demo.load_digits("train")
        >>> qmodel = prepare_qat(model, QATConfig(weight_bits=4), [x[:64]])
        >>> sorted(qat_layers(qmodel))
        ['conv1', 'conv2', 'fc1', 'fc2']
    """
    config = config or QATConfig()
    if not isinstance(config, QATConfig):
        raise ConfigError(f"config must be a QATConfig, got {type(config).__name__}")
    if not isinstance(model, paddle.nn.Layer):
        raise ConfigError(f"model must be a paddle.nn.Layer, got {type(model).__name__}")
    if qat_layers(model) or quanted_layers(model):
        raise ConfigError("model already holds quantized layers; prepare the float model")
    check_skip_layers(model, config)
    picked, skipped = quant_candidates(model, config)
    if not picked:
        raise UnsupportedOpError(f"{type(model).__name__} has no layer of type {', '.join(config.quantize_types)} to quantize")
    names = list(input_names) if input_names else None
    batches = calibration_batches(calib_data, names, 8)
    names = names or list(batches[0])
    was_training = model.training
    qmodel = copy.deepcopy(model)
    qmodel.eval()
    pairs = _conv_bn_pairs(qmodel, picked, batches[0], names) if config.fold_bn else []
    ptq_layers: dict[str, QuantedLayer] = {}
    if config.init_from_ptq:
        from slim_quant.ptq import quantize

        ptq_cfg = PTQConfig(
            calibrator=config.ptq_calibrator,
            weight_bits=config.weight_bits,
            fold_bn=bool(pairs),
            quantize_types=config.quantize_types,
            skip_layers=config.skip_layers,
            skip_types=config.skip_types,
        )
        ptq_layers = quanted_layers(quantize(model, ptq_cfg, batches, input_names=names))
    subs = dict(qmodel.named_sublayers())
    bn_of = dict(pairs)
    for name in picked:
        bn = subs[bn_of[name]] if name in bn_of else None
        layer = QATLayer(subs[name], name, config, bn)
        set_sublayer(qmodel, name, layer)
        if name in bn_of:
            set_sublayer(qmodel, bn_of[name], paddle.nn.Identity())
        if name in ptq_layers and ptq_layers[name].act_threshold is not None:
            layer.act_quanter.init_threshold(ptq_layers[name].act_threshold)
            layer.weight_quanter.init_threshold(ptq_layers[name].channel_thresholds())
    qmodel.eval()  # the new wrappers were created in training mode
    with paddle.no_grad():  # data-dependent initial ranges (eval mode: BN statistics untouched)
        run_model(qmodel, batches[0], names, where="calibration batch 0")
    qmodel.slim_qat_state = QATState(config, names, batches, list(picked), dict(skipped), pairs)
    if was_training:
        qmodel.train()
    return qmodel


def convert(model: Any) -> Any:
    """Turn a QAT model into a quantized model that exports exactly like a PTQ model.

    BatchNorms are folded for real (running statistics), weights become integer codes on
    the learned grid, activation thresholds are the learned ones. The result carries
    :class:`~slim_quant.layers.QuantedLayer` wrappers and a ``slim_quant_state``, so
    :func:`slim_quant.export` writes it as INT8 Paddle (oneDNN) and ONNX QDQ.

    Args:
        model: a model returned by :func:`prepare_qat` (after training); not modified.

    Returns:
        The converted copy, in eval mode.

    Raises:
        ConfigError: ``model`` was not prepared by :func:`prepare_qat`.

    Example:
        >>> int8_model = convert(qmodel)                                 # doctest: +SKIP
        >>> slim_quant.export(int8_model, "out/qat_int8", formats=("paddle", "onnx"))  # doctest: +SKIP
    """
    state: QATState | None = getattr(model, "slim_qat_state", None)
    if state is None or not qat_layers(model):
        raise ConfigError("model was not prepared for QAT: call slim_quant.qat.prepare_qat(model, QATConfig(), calib_data) first")
    cfg = state.config
    out = copy.deepcopy(model)
    if hasattr(out, "_layers") and isinstance(out, paddle.DataParallel):
        out = out._layers
    out.eval()
    if cfg.activation_quanter == "lsq_plus":
        warnings.warn(
            "LSQ+ learned an asymmetric activation range; INT8 export is symmetric, so convert uses the symmetric range "
            "covering it (up to one bit coarser than during training)",
            stacklevel=2,
        )
    done = []
    for name, layer in qat_layers(out).items():
        inner = layer.inner
        w = layer.folded_weight().numpy()
        bias = layer.folded_bias()
        if layer.bn is not None:
            inner.weight.set_value(paddle.to_tensor(w.astype("float32")))
            if inner.bias is None:
                inner.bias = inner.create_parameter([w.shape[layer.axis]], dtype=inner.weight.dtype, is_bias=True)
            inner.bias.set_value(paddle.to_tensor(np.asarray(bias, dtype="float32")))
        if cfg.weight_quanter == "abs_max":
            w_thr = weight_thresholds(w, layer.axis, bits=cfg.weight_bits)
        else:
            w_thr = np.maximum(layer.weight_quanter.threshold().astype("float32"), 1e-8)
        q = QuantedLayer(
            inner, name, make_calibrator("abs_max", bits=cfg.activation_bits), weight_bits=cfg.weight_bits, act_bits=cfg.activation_bits
        )
        q.act_threshold = float(np.max(layer.act_quanter.threshold()))
        q.w_threshold = w_thr
        q.set_weight_codes(quantize_np(w, w_thr, cfg.weight_bits, layer.axis))
        q.mode = "quant"
        set_sublayer(out, name, q)
        done.append(name)
    ptq_cfg = PTQConfig(calibrator=cfg.ptq_calibrator, weight_bits=cfg.weight_bits, activation_bits=cfg.activation_bits, fold_bn=False)
    qstate = QuantState(config=ptq_cfg, input_names=list(state.input_names), calib=state.calib, layers=done, skipped=dict(state.skipped))
    qstate.folded_bn = list(state.folded_bn)
    qstate.metrics["qat"] = 1.0
    out.slim_quant_state = qstate
    del out.slim_qat_state
    return out
