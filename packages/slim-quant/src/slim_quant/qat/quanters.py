"""Trainable fake quantizers ("quanters") for quantization-aware training.

Registered in :data:`QUANTERS` (add your own with ``@QUANTERS.register("name")``):

- ``abs_max`` (weights): per-channel abs-max of the current weight, straight-through
  estimator (STE) for the rounding;
- ``moving_average_abs_max`` (activations): exponential moving average of the batch
  abs-max, STE; under ``paddle.DataParallel`` the batch maximum is all-reduced so every
  rank keeps the same threshold;
- ``lsq``: learned step size (Esser et al., 2020) with the gradient scale
  ``1 / sqrt(numel * qmax)``; per channel for weights, per tensor for activations;
- ``lsq_plus`` (activations): LSQ+ (Bhalgat et al., 2020), a learned step and a learned
  offset (asymmetric range);
- ``pact`` (activations): learned clipping value ``alpha`` (Choi et al., 2018), signed
  ``clip(x, -alpha, alpha)`` so that the INT8 grid stays symmetric.

Every quanter maps to a symmetric INT threshold for export (:meth:`Quanter.threshold`),
the same representation PTQ uses (see :mod:`slim_quant.primitives`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import paddle

from slim_core import Registry
from slim_quant.primitives import fake_quant, qmax

__all__ = [
    "QUANTERS",
    "Quanter",
    "AbsMaxQuanter",
    "MovingAverageAbsMaxQuanter",
    "LSQQuanter",
    "LSQPlusQuanter",
    "PACTQuanter",
    "round_ste",
]

QUANTERS = Registry("quanter")


def round_ste(x: Any) -> Any:
    """``round(x)`` whose gradient is the identity (straight-through estimator)."""
    return x + (paddle.round(x) - x).detach()


def _grad_scale(x: Any, scale: float) -> Any:
    """Value of ``x`` with its gradient multiplied by ``scale`` (LSQ's step-size gradient scaling)."""
    return x * scale + (x - x * scale).detach()


def _world_size() -> int:
    try:
        import paddle.distributed as dist

        return dist.get_world_size() if dist.is_initialized() else 1
    except Exception:  # pragma: no cover - distributed not built in
        return 1


def _reduce_max(x: Any) -> Any:
    if _world_size() > 1:
        import paddle.distributed as dist

        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


def _reduce_mean(x: Any) -> Any:
    """Average over ranks so that data-dependent initial values agree under DataParallel."""
    n = _world_size()
    if n > 1:
        import paddle.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
        x = x / n
    return x


def _numel(x: Any) -> int:
    return int(np.prod(x.shape))


def _view(t: Any, ndim: int, axis: int | None) -> Any:
    if axis is None or t.ndim == 0 or t.shape[0] == 1:
        return t.reshape([])
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


class Quanter(paddle.nn.Layer):
    """Base of all quanters.

    Args:
        bits: bit width of the signed symmetric grid.
        channels: number of channels for per-channel quanters (1: per tensor).
        axis: channel axis of the quantized tensor (None: per tensor).
    """

    def __init__(self, bits: int = 8, channels: int = 1, axis: int | None = None, **_: Any) -> None:
        super().__init__()
        self.bits = bits
        self.channels = channels
        self.axis = axis if channels > 1 else None
        self.register_buffer("initialized", paddle.zeros([1], dtype="float32"))

    def init_threshold(self, threshold: Any) -> None:
        """Start from a known clipping threshold (e.g. calibrated by PTQ)."""
        raise NotImplementedError

    def threshold(self) -> np.ndarray:
        """Symmetric clipping threshold(s) the quanter represents (what INT8 export stores)."""
        raise NotImplementedError

    def _abs_max(self, x: Any) -> Any:
        if self.axis is None:
            return paddle.abs(x).max().reshape([1])
        red = [i for i in range(x.ndim) if i != self.axis]
        return paddle.abs(x).max(axis=red)

    def _mark(self) -> None:
        self.initialized.set_value(paddle.ones([1], dtype="float32"))

    @property
    def is_initialized(self) -> bool:
        return bool(self.initialized.numpy()[0] > 0)


@QUANTERS.register("abs_max")
class AbsMaxQuanter(Quanter):
    """Abs-max of the current tensor (per channel for weights), STE rounding. No state."""

    def forward(self, x: Any) -> Any:
        t = self._abs_max(x).detach()
        self._last = t
        return fake_quant(x, t, self.bits, self.axis)

    def init_threshold(self, threshold: Any) -> None:  # stateless: thresholds follow the weight
        pass

    def threshold(self) -> np.ndarray:
        return np.asarray(self._last.numpy(), dtype="float32")


@QUANTERS.register("moving_average_abs_max")
class MovingAverageAbsMaxQuanter(Quanter):
    """EMA of the batch abs-max (``decay`` per step), STE rounding; synchronized across ranks."""

    def __init__(self, bits: int = 8, channels: int = 1, axis: int | None = None, decay: float = 0.9, **kw: Any) -> None:
        super().__init__(bits, channels, axis)
        self.decay = decay
        self.register_buffer("scale", paddle.ones([channels], dtype="float32"))

    def forward(self, x: Any) -> Any:
        if self.training or not self.is_initialized:
            with paddle.no_grad():
                cur = _reduce_max(self._abs_max(x).detach())
                new = cur if not self.is_initialized else self.scale * self.decay + cur * (1 - self.decay)
                self.scale.set_value(new)
                self._mark()
        return fake_quant(x, _view(self.scale, x.ndim, self.axis), self.bits, self.axis)

    def init_threshold(self, threshold: Any) -> None:
        self.scale.set_value(paddle.to_tensor(np.broadcast_to(np.asarray(threshold, "float32").reshape(-1), [self.channels]).copy()))
        self._mark()

    def threshold(self) -> np.ndarray:
        return self.scale.numpy().copy()


@QUANTERS.register("lsq")
class LSQQuanter(Quanter):
    """Learned step size: ``q = round(clip(x / s, -Q, Q)) * s`` with ``s = |step|`` a parameter.

    Adam-style optimizers ignore LSQ's gradient scale; give the quanter parameters a
    smaller learning rate (a parameter group) when steps are tiny, e.g. 4-bit weights.

    ``s`` starts at ``2 * mean|x| / sqrt(Q)`` (the paper's init) on the first batch unless
    :meth:`init_threshold` gave it (``s = threshold / Q``).
    """

    def __init__(self, bits: int = 8, channels: int = 1, axis: int | None = None, **kw: Any) -> None:
        super().__init__(bits, channels, axis)
        self.step = self.create_parameter([channels], dtype="float32", default_initializer=paddle.nn.initializer.Constant(1.0))

    def _init_from(self, x: Any) -> None:
        q = qmax(self.bits)
        if self.axis is None:
            m = paddle.abs(x).mean().reshape([1])
        else:
            m = paddle.abs(x).mean(axis=[i for i in range(x.ndim) if i != self.axis])
        self.step.set_value(_reduce_mean(paddle.clip(2.0 * m / math.sqrt(q), min=1e-8).detach()))
        self._mark()

    def forward(self, x: Any) -> Any:
        if not self.is_initialized:
            self._init_from(x.detach())
        q = qmax(self.bits)
        g = 1.0 / math.sqrt(_numel(x) / self.channels * q)
        s = _view(_grad_scale(paddle.abs(self.step) + 1e-8, g), x.ndim, self.axis)
        return round_ste(paddle.clip(x / s, -q, q)) * s

    def init_threshold(self, threshold: Any) -> None:
        t = np.broadcast_to(np.asarray(threshold, "float32").reshape(-1), [self.channels]).copy()
        self.step.set_value(paddle.to_tensor(np.maximum(t, 1e-8) / qmax(self.bits)))
        self._mark()

    def threshold(self) -> np.ndarray:
        return (np.abs(self.step.numpy()) + 1e-8) * qmax(self.bits)


@QUANTERS.register("lsq_plus")
class LSQPlusQuanter(LSQQuanter):
    """LSQ+: learned step and learned offset ``beta``: ``q = round(clip((x - beta) / s, -Q, Q)) * s + beta``.

    Export to a symmetric INT8 runtime uses the threshold covering the learned range,
    ``max(|beta - Q s|, |beta + Q s|)``.
    """

    def __init__(self, bits: int = 8, channels: int = 1, axis: int | None = None, **kw: Any) -> None:
        super().__init__(bits, channels, axis)
        self.offset = self.create_parameter([channels], dtype="float32", default_initializer=paddle.nn.initializer.Constant(0.0))

    def _init_from(self, x: Any) -> None:
        q = qmax(self.bits)
        hi = _reduce_max(x.max().reshape([1]))
        lo = -_reduce_max(-x.min().reshape([1]))
        self.step.set_value(paddle.clip((hi - lo) / (2 * q), min=1e-8).expand([self.channels]))
        self.offset.set_value(((hi + lo) / 2).expand([self.channels]))
        self._mark()

    def forward(self, x: Any) -> Any:
        if not self.is_initialized:
            self._init_from(x.detach())
        q = qmax(self.bits)
        g = 1.0 / math.sqrt(_numel(x) / self.channels * q)
        s = _view(_grad_scale(paddle.abs(self.step) + 1e-8, g), x.ndim, self.axis)
        b = _view(_grad_scale(self.offset, g), x.ndim, self.axis)
        return round_ste(paddle.clip((x - b) / s, -q, q)) * s + b

    def threshold(self) -> np.ndarray:
        q = qmax(self.bits)
        s, b = np.abs(self.step.numpy()) + 1e-8, self.offset.numpy()
        return np.maximum(np.abs(b - q * s), np.abs(b + q * s))


@QUANTERS.register("pact")
class PACTQuanter(Quanter):
    """PACT: ``y = clip(x, -alpha, alpha)`` with a learned ``alpha``, then STE fake quant on ``[-alpha, alpha]``.

    ``alpha`` starts at the first batch's 99.9th percentile of ``|x|`` (so that the top values
    are clipped and ``alpha`` receives a gradient from the start) unless :meth:`init_threshold` gave it;
    its gradient is the count of values clipped above (minus those below), as in the paper.
    """

    def __init__(self, bits: int = 8, channels: int = 1, axis: int | None = None, **kw: Any) -> None:
        super().__init__(bits, 1, None)
        self.alpha = self.create_parameter([1], dtype="float32", default_initializer=paddle.nn.initializer.Constant(1.0))

    def forward(self, x: Any) -> Any:
        if not self.is_initialized:
            p = np.percentile(np.abs(x.detach().numpy()), 99.9)
            self.init_threshold(float(_reduce_max(paddle.to_tensor([p], dtype="float32"))[0]))
        a = paddle.abs(self.alpha) + 1e-6
        y = paddle.minimum(paddle.maximum(x, -a), a)
        s = a.detach() / qmax(self.bits)
        return y + (paddle.round(y / s) * s - y).detach()

    def init_threshold(self, threshold: Any) -> None:
        self.alpha.set_value(paddle.to_tensor(np.asarray([float(np.max(threshold))], "float32")))
        self._mark()

    def threshold(self) -> np.ndarray:
        return np.abs(self.alpha.numpy()) + 1e-6
