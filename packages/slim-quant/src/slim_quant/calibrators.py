"""Activation calibrators: turn observed tensors into a clipping threshold.

Every calibrator is a small streaming object registered in :data:`CALIBRATORS`:
``observe(array)`` once per batch, then ``threshold()``. Histogram-based ones
(``percentile``, ``kl``, ``mse``) keep a 2048-bin histogram of ``|x|`` that is
re-binned when a later batch has a larger range, so memory stays constant.
``min_value`` is tracked too so exporters can choose unsigned codes for
non-negative tensors (after ReLU).

Add your own::

    @CALIBRATORS.register("my_cal")
    class MyCal(Calibrator):
        def observe(self, x): ...
        def threshold(self): ...

Example:
    >>> import numpy as np
    >>> cal = make_calibrator("abs_max")
    >>> cal.observe(np.array([-3.0, 2.0])); float(cal.threshold())
    3.0
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slim_core.errors import DataError
from slim_core.registry import Registry

__all__ = [
    "CALIBRATORS",
    "Calibrator",
    "AbsMaxCalibrator",
    "AvgCalibrator",
    "HistogramCalibrator",
    "PercentileCalibrator",
    "KLCalibrator",
    "MSECalibrator",
    "make_calibrator",
]

CALIBRATORS = Registry("calibrator")
_BINS = 2048


class Calibrator:
    """Base class: records the min, max and abs-max seen; subclasses pick the threshold."""

    def __init__(self, bits: int = 8, **_: Any) -> None:
        self.bits = bits
        self.count = 0
        self.min_value = np.inf
        self.max_value = -np.inf
        self.abs_max = 0.0

    def observe(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        if x.size == 0:
            return
        if not np.isfinite(x).all():
            raise DataError("an activation holds NaN or inf during calibration; the model or the calibration data is broken")
        self.count += 1
        lo, hi = float(x.min()), float(x.max())
        self.min_value = min(self.min_value, lo)
        self.max_value = max(self.max_value, hi)
        self.abs_max = max(self.abs_max, abs(lo), abs(hi))
        self._observe(x, max(abs(lo), abs(hi)))

    def _observe(self, x: np.ndarray, batch_abs_max: float) -> None:
        """Hook for subclasses."""

    def threshold(self) -> float:
        return float(self.abs_max)

    @property
    def non_negative(self) -> bool:
        return bool(self.count) and self.min_value >= 0.0


@CALIBRATORS.register("abs_max")
class AbsMaxCalibrator(Calibrator):
    """The largest absolute value seen (no clipping)."""


@CALIBRATORS.register("avg")
class AvgCalibrator(Calibrator):
    """Mean over batches of each batch's absolute maximum."""

    def __init__(self, bits: int = 8, **kw: Any) -> None:
        super().__init__(bits, **kw)
        self._sum = 0.0

    def _observe(self, x: np.ndarray, batch_abs_max: float) -> None:
        self._sum += batch_abs_max

    def threshold(self) -> float:
        return self._sum / max(self.count, 1)


class HistogramCalibrator(Calibrator):
    """Keeps a histogram of ``|x|`` over ``[0, range]``; re-bins when the range grows."""

    def __init__(self, bits: int = 8, bins: int = _BINS, **kw: Any) -> None:
        super().__init__(bits, **kw)
        self.bins = bins
        self.hist = np.zeros(bins, dtype="float64")
        self.range = 0.0
        self.zeros = 0.0  # exact zeros (ReLU outputs) are always represented exactly

    def _observe(self, x: np.ndarray, batch_abs_max: float) -> None:
        a = np.abs(x.astype("float32", copy=False)).ravel()
        self.zeros += float(np.count_nonzero(a == 0.0))
        if batch_abs_max > self.range:
            new_range = batch_abs_max if self.range == 0.0 else max(batch_abs_max, self.range * 1.5)
            if self.hist.any():
                centers = (np.arange(self.bins) + 0.5) * (self.range / self.bins)
                self.hist, _ = np.histogram(centers, bins=self.bins, range=(0.0, new_range), weights=self.hist)
            self.range = new_range
        if self.range <= 0.0:
            self.hist[0] += a.size
            return
        h, _ = np.histogram(a, bins=self.bins, range=(0.0, self.range))
        self.hist += h

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.range, self.bins + 1)

    def nonzero_hist(self) -> np.ndarray:
        """The histogram without the exact zeros, which cost nothing at any threshold."""
        h = self.hist.copy()
        h[0] = max(0.0, h[0] - self.zeros)
        return h


@CALIBRATORS.register("percentile")
class PercentileCalibrator(HistogramCalibrator):
    """The ``percentile`` (default 99.99) of ``|x|`` over all calibration values."""

    def __init__(self, bits: int = 8, percentile: float = 99.99, **kw: Any) -> None:
        super().__init__(bits, **kw)
        self.percentile = percentile

    def threshold(self) -> float:
        total = self.hist.sum()
        if total == 0 or self.range == 0.0:
            return float(self.abs_max)
        cdf = np.cumsum(self.hist) / total
        idx = int(np.searchsorted(cdf, self.percentile / 100.0))
        return float(min(self.edges[min(idx + 1, self.bins)], self.abs_max))


@CALIBRATORS.register("mse")
class MSECalibrator(HistogramCalibrator):
    """The threshold minimising the expected squared quantization error (clipping plus rounding)."""

    def threshold(self) -> float:
        hist = self.nonzero_hist()
        if hist.sum() == 0 or self.range == 0.0:
            return float(self.abs_max)
        centers = (self.edges[:-1] + self.edges[1:]) / 2
        levels = (1 << (self.bits - 1)) - 1
        best_t, best_err = self.range, np.inf
        for i in range(self.bins // 16, self.bins + 1, 8):
            t = self.edges[i]
            stepsize = t / levels
            clipped = centers > t
            err = (hist[clipped] * (centers[clipped] - t) ** 2).sum() + hist[~clipped].sum() * stepsize**2 / 12.0
            if err < best_err:
                best_t, best_err = t, err
        return float(min(best_t, self.abs_max))


@CALIBRATORS.register("kl")
class KLCalibrator(HistogramCalibrator):
    """Entropy calibration: the threshold whose quantized distribution is closest (KL) to the observed one."""

    def threshold(self) -> float:
        hist = self.nonzero_hist()
        if hist.sum() == 0 or self.range == 0.0:
            return float(self.abs_max)
        levels = 1 << (self.bits - 1)  # 128 positive levels for 8 bits
        best_i, best_kl = self.bins, np.inf
        for i in range(levels, self.bins + 1, 16):
            ref = hist[:i].copy()
            ref[i - 1] += hist[i:].sum()
            ref_p = ref / ref.sum()
            # merge i bins into `levels` groups and expand back over the non-empty bins
            src = hist[:i]
            starts = (np.arange(levels) * i) // levels
            sums = np.add.reduceat(src, starts)
            counts = np.add.reduceat((src > 0).astype("float64"), starts)
            group = np.repeat(np.arange(levels), np.diff(np.append(starts, i)))
            q = np.where(src > 0, (sums / np.maximum(counts, 1.0))[group], 0.0)
            if q.sum() == 0:
                continue
            q_p = np.maximum(_smooth(q / q.sum()), 1e-12)
            mask = ref_p > 0
            kl = float((ref_p[mask] * np.log(ref_p[mask] / q_p[mask])).sum())
            if kl < best_kl:
                best_i, best_kl = i, kl
        return float(min(self.edges[best_i], self.abs_max))


def _smooth(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Give empty bins a little mass (taken from the others) so the KL divergence stays finite."""
    zeros = p == 0
    n_zero, n_nonzero = int(zeros.sum()), int((~zeros).sum())
    if n_zero == 0 or n_nonzero == 0:
        return p
    return p + eps * zeros - (eps * n_zero / n_nonzero) * (~zeros)


def make_calibrator(name: str, bits: int = 8, **options: Any) -> Calibrator:
    """Build the calibrator registered as ``name`` (unknown names raise ConfigError listing the known ones)."""
    cls = CALIBRATORS.get(name)
    return cls(bits=bits, **options)
