"""``quantize_``: post-training quantization of a dygraph model.

Steps (each optional step is a :class:`~slim_quant.PTQConfig` switch):

1. validate the config, the skip list and the calibration data (NaN, inf, empty);
2. fold BatchNorm into the conv/linear before it (proven on the traced program by slim-deploy);
3. wrap every quantizable Conv2D/Linear in a :class:`~slim_quant.layers.QuantedLayer`;
4. calibrate activation thresholds with the chosen calibrator; quantize weights per channel;
5. bias correction, then reconstruction (AdaRound / QDrop layer by layer, BRECQ block by block);
6. with ``max_metric_drop`` and ``eval_fn``: keep the most sensitive layers in float until the drop fits.

Example:
    >>> from slim_core import demo
    >>> model, _ = demo.train_demo_model(epochs=2)                 # doctest: +SKIP
    >>> x, _ = demo.load_digits("train")                            # doctest: +SKIP
    >>> quantize_(model, PTQConfig(calibrator="kl"), [x[:64], x[64:128]])  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paddle

from slim_core.bn_fold import fold_bn_
from slim_core.data import Batches, data_errors
from slim_core.errors import ConfigError, DataError, SlimError, UnsupportedOpError, error_summary
from slim_core.layers import set_sublayer
from slim_core.progress import progress
from slim_core.registry import closest
from slim_core.rollback import in_place
from slim_core.spec import specs_from_batch as input_specs
from slim_quant.calibrators import make_calibrator
from slim_quant.config import PTQConfig
from slim_quant.layers import QuantedLayer, quanted_layers

__all__ = [
    "quantize_",
    "quantize",
    "QuantState",
    "run_model",
    "set_mode",
    "calibration_batches",
    "check_skip_layers",
    "quant_candidates",
    "input_specs",
]

_WRAPPABLE = {"Conv2D": paddle.nn.Conv2D, "Linear": paddle.nn.Linear}


@dataclass
class QuantState:
    """What ``quantize_`` did, attached to the model as ``model.slim_quant_state``."""

    config: PTQConfig
    input_names: list[str]
    calib: list[dict[str, np.ndarray]] = field(repr=False)
    layers: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    folded_bn: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "ptq",
            "config": self.config.to_dict(),
            "quantized_layers": list(self.layers),
            "skipped_layers": dict(self.skipped),
            "folded_bn": [list(p) for p in self.folded_bn],
            "metrics": dict(self.metrics),
        }


def calibration_batches(calib_data: Any, input_names: Sequence[str] | None, limit: int) -> list[dict[str, np.ndarray]]:
    """Validated calibration batches as a list (Batches rejects NaN/inf/empty data)."""
    batches = [dict(b) for b in Batches(calib_data, input_names, limit=limit)]
    if not batches:
        raise DataError("calibration data is empty: no batch was produced")
    return batches


def run_model(model: Any, batch: dict[str, np.ndarray], names: Sequence[str], *, where: str | None = None) -> Any:
    """Call ``model`` on one batch dict, inputs in ``names`` order.

    A shape/dtype mismatch is a :class:`DataError` naming the input. With ``where`` (e.g.
    ``"calibration batch 3"``), any other error Paddle raises on the batch also becomes a
    :class:`DataError` naming the batch and its inputs.
    """
    arrays = [batch[n] for n in names]
    try:
        with data_errors(model, arrays, names=names, where=where or "the calibration data"):
            return model(*[paddle.to_tensor(a) for a in arrays])
    except SlimError:
        raise
    except Exception as exc:  # Paddle's ValueError/RuntimeError
        if where is None:
            raise
        shapes = ", ".join(f"{n} {list(batch[n].shape)} {batch[n].dtype}" for n in names)
        raise DataError(f"the model failed on {where} (inputs: {shapes}): {error_summary(exc)}") from exc


def set_mode(model: Any, mode: str) -> None:
    """Switch every QuantedLayer of ``model`` to ``"observe"``, ``"quant"`` or ``"float"``."""
    for q in quanted_layers(model).values():
        q.mode = mode


def check_skip_layers(model: Any, config: PTQConfig) -> None:
    """Raise ConfigError when ``config.skip_layers`` names no sublayer (with the closest path) or a type is unsupported."""
    names = [n for n, _ in model.named_sublayers()]
    for s in config.skip_layers:
        if s not in names:
            hint = closest(s, names)
            did = f" (did you mean {hint!r}?)" if hint else ""
            raise ConfigError(f"skip_layers names {s!r}, which is not a layer of {type(model).__name__}{did}")
    unknown = [t for t in config.quantize_types if t not in _WRAPPABLE]
    if unknown:
        raise ConfigError(f"quantize_types {unknown} are not supported; supported: {', '.join(_WRAPPABLE)}")


def _is_skipped(name: str, layer: Any, config: PTQConfig) -> str | None:
    for s in config.skip_layers:
        if name == s or name.startswith(s + "."):
            return f"skip_layers {s!r}"
    if type(layer).__name__ in config.skip_types:
        return f"skip_types {type(layer).__name__!r}"
    return None


def quant_candidates(model: Any, config: PTQConfig) -> tuple[list[str], dict[str, str]]:
    """Sublayer paths to quantize under ``config`` and the skipped ones with the reason (shared by PTQ and QAT)."""
    types = tuple(_WRAPPABLE[t] for t in config.quantize_types)
    picked, skipped = [], {}
    for name, layer in model.named_sublayers():
        if isinstance(layer, QuantedLayer) or not isinstance(layer, types) or type(layer).__name__ not in config.quantize_types:
            continue
        reason = _is_skipped(name, layer, config)
        if reason:
            skipped[name] = reason
        else:
            picked.append(name)
    # layers inside an already wrapped layer are not separate candidates
    return picked, skipped


def _fold_bn(model: Any, batch: dict[str, np.ndarray], names: Sequence[str]) -> list[tuple[str, str]]:
    pairs = fold_bn_(model, input_specs(batch, names))
    return [(p.linear, p.bn) for p in pairs]


def _calibrate(model: Any, batches: list[dict[str, np.ndarray]], names: Sequence[str], desc: str) -> None:
    set_mode(model, "observe")
    with paddle.no_grad():
        for i, b in enumerate(progress(batches, desc=desc)):
            run_model(model, b, names, where=f"calibration batch {i}")


def _unwrap(model: Any, name: str) -> None:
    q = quanted_layers(model)[name]
    set_sublayer(model, name, q.inner)


def _bias_correction(model: Any, batches: list[dict[str, np.ndarray]], names: Sequence[str]) -> list[str]:
    """Subtract from each bias the mean output shift its quantized weight causes (inputs from the quantized model)."""
    corrected = []
    set_mode(model, "quant")
    for name, q in progress(list(quanted_layers(model).items()), desc="bias correction"):
        if q.inner.bias is None:
            continue
        sums: list[np.ndarray] = []

        def hook(layer: Any, inputs: Any, _q: QuantedLayer = q, _sums: list = sums) -> None:
            x = _q.quant_input(inputs[0])
            diff = _q.forward_with_weight(x, _q._w_deq) - _q.forward_with_weight(x, _q.inner.weight)
            axis = 1 if not isinstance(_q.inner, paddle.nn.Linear) else diff.ndim - 1
            red = [i for i in range(diff.ndim) if i != axis]
            _sums.append(diff.mean(axis=red).numpy())

        h = q.register_forward_pre_hook(hook)
        with paddle.no_grad():
            for b in batches:
                run_model(model, b, names)
        h.remove()
        if sums:
            delta = np.mean(sums, axis=0).astype("float32")
            q.inner.bias.set_value(q.inner.bias.numpy() - delta)
            corrected.append(name)
    return corrected


def _metric_drop(base: float, value: float, higher_is_better: bool) -> float:
    return (base - value) if higher_is_better else (value - base)


def _control_metric(model: Any, state: QuantState, eval_fn: Callable[[Any], float]) -> None:
    cfg = state.config
    target = float(cfg.max_metric_drop)  # type: ignore[arg-type]
    base = state.metrics["float"]
    set_mode(model, "quant")
    current = float(eval_fn(model))
    state.metrics["int8_all_layers"] = current
    if _metric_drop(base, current, cfg.higher_is_better) <= target:
        state.metrics["int8"] = current
        return
    layers = quanted_layers(model)
    gains = {}
    for name, q in progress(list(layers.items()), desc="sensitivity"):
        q.mode = "float"
        gains[name] = -_metric_drop(current, float(eval_fn(model)), cfg.higher_is_better)
        q.mode = "quant"
    for name in sorted(gains, key=gains.get, reverse=True):  # type: ignore[arg-type]
        layers[name].mode = "float"
        state.skipped[name] = f"max_metric_drop: metric gain {gains[name]:.4g} when kept in float"
        current = float(eval_fn(model))
        if _metric_drop(base, current, cfg.higher_is_better) <= target:
            break
    for name in list(state.skipped):
        if name in layers and layers[name].mode == "float":
            _unwrap(model, name)
            state.layers.remove(name)
    state.metrics["int8"] = current
    if _metric_drop(base, current, cfg.higher_is_better) > target:
        import warnings

        warnings.warn(
            f"max_metric_drop={target} not reached: metric {current:.4g} vs float {base:.4g} with every layer but the "
            f"least sensitive kept in float",
            stacklevel=3,
        )


@in_place
def quantize_(
    model: Any,
    config: PTQConfig | None = None,
    calib_data: Any = None,
    *,
    eval_fn: Callable[[Any], float] | None = None,
    input_names: Sequence[str] | None = None,
) -> Any:
    """Post-training quantize a dygraph model in place (fake-quantized Conv2D/Linear layers).

    Args:
        model: a ``paddle.nn.Layer``.
        config: a :class:`PTQConfig` (default: percentile calibration, per-channel INT8 weights), or a
            :class:`~slim_quant.weight_only.WeightOnlyConfig`, which dispatches to ``quantize_weight_only_``.
        calib_data: calibration batches in any form :class:`slim_core.Batches` takes
            (DataLoader, list of arrays, ``(x, label)`` tuples, dicts); at most ``config.calib_batches`` are used.
        eval_fn: ``eval_fn(model) -> float``, needed for ``config.max_metric_drop``.
        input_names: names of the model inputs when batches are tuples/lists of several arrays.

    Returns:
        ``model`` itself, now holding :class:`~slim_quant.layers.QuantedLayer` wrappers in ``"quant"``
        mode and a ``slim_quant_state`` (:class:`QuantState`) recording what was done.
        Export it with :func:`slim_quant.export`.

    All or nothing: on any failure (Ctrl-C included) the model is restored as it was, BN
    folding and wrappers undone (see :mod:`slim_core.rollback`).

    Raises:
        ConfigError: bad config, a skip or reconstruction block name that is no layer, ``max_metric_drop`` without ``eval_fn``.
        DataError: empty calibration data, NaN/inf, wrong shapes, a batch the model fails on.
        UnsupportedOpError: the model has no quantizable layer.

    Example:
        >>> qmodel = quantize_(model, PTQConfig(calibrator="mse"), calib_data=loader)   # doctest: +SKIP
    """
    if config is None:
        config = PTQConfig()
    from slim_quant.weight_only import WeightOnlyConfig, quantize_weight_only_  # lazy: weight_only imports this module

    if isinstance(config, WeightOnlyConfig):  # one verb for every quantization config, as in torchao's quantize_
        return quantize_weight_only_(model, config, calib_data, input_names=input_names)
    if not isinstance(config, PTQConfig):
        raise ConfigError(f"config must be a PTQConfig or WeightOnlyConfig, got {type(config).__name__}")
    if not isinstance(model, paddle.nn.Layer):
        raise ConfigError(f"model must be a paddle.nn.Layer, got {type(model).__name__}")
    if getattr(model, "slim_quant_state", None) is not None:
        raise ConfigError("model is already quantized (it has a slim_quant_state); quantize the float model")
    if config.max_metric_drop is not None and eval_fn is None:
        raise ConfigError("PTQConfig.max_metric_drop needs eval_fn(model) -> metric")
    check_skip_layers(model, config)
    picked, skipped = quant_candidates(model, config)
    if not picked:
        types = ", ".join(config.quantize_types)
        why = f" ({len(skipped)} skipped by the config)" if skipped else ""
        raise UnsupportedOpError(f"{type(model).__name__} has no quantizable layer of type {types}{why}")
    names = list(input_names) if input_names else None
    batches = calibration_batches(calib_data, names, config.calib_batches)
    names = names or list(batches[0])
    state = QuantState(config=config, input_names=names, calib=batches, skipped=skipped)
    model.eval()
    if config.reconstruction is not None:
        from slim_quant.reconstruction import check_blocks

        check_blocks(model, config.reconstruction, picked, batches[0], names)
    if config.max_metric_drop is not None:
        state.metrics["float"] = float(eval_fn(model))  # type: ignore[misc]
    # all checks passed: from here on the model changes
    if config.fold_bn:
        state.folded_bn = _fold_bn(model, batches[0], names)
    sublayers = dict(model.named_sublayers())
    for name in picked:
        cal = make_calibrator(config.calibrator, bits=config.activation_bits, percentile=config.percentile)
        q = QuantedLayer(
            sublayers[name],
            name,
            cal,
            weight_bits=config.weight_bits,
            act_bits=config.activation_bits,
            per_channel=config.weight_granularity == "per_channel",
            weight_method=config.weight_calibrator,
        )
        set_sublayer(model, name, q)
    _calibrate(model, batches, names, "calibrate")
    for name, q in quanted_layers(model).items():
        if q.calibrator.count == 0:
            state.skipped[name] = "never ran during calibration"
            _unwrap(model, name)
            continue
        q.finalize_activation()
        q.quantize_weight()
        state.layers.append(name)
    if not state.layers:
        raise UnsupportedOpError(f"no quantizable layer of {type(model).__name__} ran on the calibration data")
    if config.bias_correction:
        state.metrics["bias_corrected_layers"] = float(len(_bias_correction(model, batches[:4], names)))
    if config.reconstruction is not None:
        from slim_quant.reconstruction import reconstruct_

        state.metrics.update(reconstruct_(model, batches, names, config.reconstruction))
    set_mode(model, "quant")
    model.slim_quant_state = state
    if config.max_metric_drop is not None:
        _control_metric(model, state, eval_fn)  # type: ignore[arg-type]
    set_mode(model, "quant")
    return model


def quantize(model: Any, config: PTQConfig | None = None, calib_data: Any = None, **kw: Any) -> Any:
    """Like :func:`quantize_` but on a deep copy; ``model`` is left unchanged."""
    return quantize_(copy.deepcopy(model), config, calib_data, **kw)
