"""Quantization primitives shared by PTQ, QAT and weight-only code.

Everything here is symmetric, signed, zero-point-free integer quantization as
Paddle's ``quantize_linear``/``dequantize_linear`` and oneDNN INT8 use it: a
*threshold* ``t`` (the clipping range, what Paddle stores as ``@scale``) maps
``[-t, t]`` onto ``[-qmax, qmax]`` with ``qmax = 2**(bits-1) - 1``.

The other quantization code in this package (``slim_quant.qat``,
``slim_quant.weight_only``) imports these functions instead of writing its own:

- :func:`qmax` and :func:`step` (threshold to integer step);
- :func:`quantize_np` / :func:`dequantize_np` (numpy, per tensor or per channel);
- :func:`weight_thresholds` (per-channel or per-tensor abs-max / MSE ranges);
- :func:`fake_quant` (paddle, straight-through estimator for training).

Example:
    >>> import numpy as np
    >>> w = np.array([[0.5, -1.0], [0.25, 0.1]], "float32")
    >>> t = weight_thresholds(w, axis=0)
    >>> q = quantize_np(w, t, axis=0)
    >>> q.dtype, q.tolist()
    (dtype('int8'), [[64, -127], [127, 51]])
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from slim_core.errors import ConfigError

__all__ = [
    "qmax",
    "step",
    "check_bits",
    "quantize_np",
    "dequantize_np",
    "fake_quant_np",
    "weight_thresholds",
    "channel_view",
    "fake_quant",
]

_EPS = 1e-8


def check_bits(bits: int, what: str = "bits", allowed: tuple[int, ...] = tuple(range(2, 9))) -> int:
    """Raise ConfigError unless ``bits`` is a supported width (default 2..8)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in allowed:
        raise ConfigError(f"{what}={bits!r} is not a supported bit width; supported: {', '.join(map(str, allowed))}")
    return bits


def qmax(bits: int = 8) -> int:
    """Largest integer level of a signed symmetric ``bits``-bit code (127 for 8 bits)."""
    return (1 << (bits - 1)) - 1


def step(threshold: Any, bits: int = 8) -> Any:
    """Quantization step (scale in ONNX terms) for a clipping ``threshold``."""
    return np.maximum(np.asarray(threshold, dtype="float32"), _EPS) / qmax(bits)


def channel_view(t: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    """Reshape per-channel values ``t`` so that they broadcast along ``axis`` of an ``ndim`` array."""
    t = np.asarray(t, dtype="float32")
    if axis is None or t.ndim == 0 or t.size == 1:
        return t.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


def quantize_np(x: np.ndarray, threshold: Any, bits: int = 8, axis: int | None = None) -> np.ndarray:
    """Round ``x`` to signed integers in ``[-qmax, qmax]`` (int8 storage for bits <= 8)."""
    s = channel_view(step(threshold, bits), x.ndim, axis)
    q = np.clip(np.round(np.asarray(x, dtype="float32") / s), -qmax(bits), qmax(bits))
    return q.astype("int8")


def dequantize_np(q: np.ndarray, threshold: Any, bits: int = 8, axis: int | None = None) -> np.ndarray:
    """Inverse of :func:`quantize_np` (float32)."""
    s = channel_view(step(threshold, bits), q.ndim, axis)
    return (q.astype("float32") * s).astype("float32")


def fake_quant_np(x: np.ndarray, threshold: Any, bits: int = 8, axis: int | None = None) -> np.ndarray:
    """Quantize then dequantize (the value the integer kernel effectively computes with)."""
    return dequantize_np(quantize_np(x, threshold, bits, axis), threshold, bits, axis)


def _mse_thresholds(w: np.ndarray, axis: int | None, bits: int, grid: int = 40) -> np.ndarray:
    """Per-channel clipping threshold minimising the squared weight error over ``grid`` clip ratios."""
    if axis is None:
        flat = w.reshape(1, -1)
    else:
        flat = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    amax = np.abs(flat).max(axis=1)
    best = amax.copy()
    best_err = np.full(amax.shape, np.inf, dtype="float64")
    for r in np.linspace(0.5, 1.0, grid):
        t = np.maximum(amax * r, _EPS)
        s = (t / qmax(bits))[:, None]
        err = ((np.clip(np.round(flat / s), -qmax(bits), qmax(bits)) * s - flat) ** 2).sum(axis=1)
        better = err < best_err
        best[better] = t[better]
        best_err[better] = err[better]
    return best.astype("float32") if axis is not None else best.reshape(()).astype("float32")


def weight_thresholds(w: np.ndarray, axis: int | None = 0, *, method: Literal["abs_max", "mse"] = "abs_max", bits: int = 8) -> np.ndarray:
    """Clipping thresholds of a weight, one per channel along ``axis`` (``None``: one for the tensor).

    Args:
        w: the float weight.
        axis: the output-channel axis (0 for conv ``[out, in, kh, kw]``, 1 for Paddle Linear ``[in, out]``).
        method: ``"abs_max"`` (no clipping) or ``"mse"`` (clip ratio minimising the squared error).
        bits: weight bit width.
    """
    w = np.asarray(w, dtype="float32")
    if method == "mse":
        return _mse_thresholds(w, axis, bits)
    if method != "abs_max":
        raise ConfigError(f"weight method {method!r} is not one of 'abs_max', 'mse'")
    if axis is None:
        return np.maximum(np.abs(w).max(), _EPS).astype("float32").reshape(())
    red = tuple(i for i in range(w.ndim) if i != axis)
    return np.maximum(np.abs(w).max(axis=red), _EPS).astype("float32")


def fake_quant(x: Any, threshold: Any, bits: int = 8, axis: int | None = None) -> Any:
    """Paddle fake quantization with a straight-through gradient.

    Args:
        x: a paddle Tensor.
        threshold: float, numpy array or Tensor; per channel when ``axis`` is given.
        bits: bit width.
        axis: channel axis of ``x`` for per-channel thresholds.

    Returns:
        ``dequantize(quantize(x))`` in the forward pass; gradient 1 inside the range.
    """
    import paddle

    t = threshold if isinstance(threshold, paddle.Tensor) else paddle.to_tensor(np.asarray(threshold, dtype="float32"))
    if axis is not None and t.ndim == 1 and t.shape[0] > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        t = t.reshape(shape)
    s = paddle.clip(t, min=_EPS) / qmax(bits)
    q = paddle.clip(paddle.round(x / s), -qmax(bits), qmax(bits)) * s
    return x + (q - x).detach()
