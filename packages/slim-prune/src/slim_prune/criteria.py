"""Channel importance criteria, in a registry users can extend.

A criterion receives the parameter slices of one channel group, each already
rearranged to ``[group_size, k]`` (row ``i`` holds everything channel ``i`` owns in
that parameter), and returns one score per channel: higher means more important.

Example:
    >>> import numpy as np
    >>> from slim_prune.criteria import CRITERIA, ChannelSlice
    >>> @CRITERIA.register("max_abs")
    ... def max_abs(slices):
    ...     return sum(np.abs(s.values).max(axis=1) for s in slices if s.kind == "out")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from slim_core import Registry

__all__ = ["CRITERIA", "ChannelSlice", "Criterion", "l1", "l2", "fpgm", "bn_scale", "taylor"]


class ChannelSlice:
    """One group member's parameter, seen per channel (values are read lazily).

    Attributes:
        layer: sublayer path.
        param: attribute name (``weight``, ``bias``, ``_mean``...).
        kind: ``"out"`` (the layer produces the channels) or ``"in"`` (it consumes them).
        layer_type: class name of the sublayer (``Conv2D``, ``BatchNorm2D``...).
        values: ``[group_size, k]`` parameter values.
        grad: same shape, the gradient of the loss, or None when no loss was given.
    """

    def __init__(
        self,
        layer: str,
        param: str,
        kind: str,
        layer_type: str,
        values: np.ndarray | Callable[[], np.ndarray],
        grad: np.ndarray | Callable[[], np.ndarray | None] | None = None,
    ) -> None:
        self.layer, self.param, self.kind, self.layer_type = layer, param, kind, layer_type
        self._values, self._grad = values, grad

    @property
    def values(self) -> np.ndarray:
        if callable(self._values):
            self._values = self._values()
        return self._values

    @property
    def grad(self) -> np.ndarray | None:
        if callable(self._grad):
            self._grad = self._grad()
        return self._grad

    def __repr__(self) -> str:
        return f"ChannelSlice({self.layer}.{self.param}, kind={self.kind}, {self.layer_type})"

    @property
    def is_norm(self) -> bool:
        return "Norm" in self.layer_type

    @property
    def is_weight(self) -> bool:
        """A conv/linear weight (not a bias, norm parameter or statistic)."""
        return self.param == "weight" and not self.is_norm and self.layer_type not in ("PReLU",)


Criterion = Callable[[Sequence[ChannelSlice]], np.ndarray]
CRITERIA: Registry = Registry("criterion")

# Set on criteria that need gradients (prune_ then requires a loss_fn).
NEEDS_GRAD: set[str] = {"taylor"}


def _weights(slices: Sequence[ChannelSlice]) -> list[ChannelSlice]:
    """The filters that produce the channels; consumer-side weights when there are none."""
    out = [s for s in slices if s.is_weight and s.kind == "out"]
    return out or [s for s in slices if s.is_weight] or list(slices)


def _normalized_sum(parts: list[np.ndarray]) -> np.ndarray:
    # Members differ in scale (a 3x3 conv vs. a BN); normalize each before summing.
    total = np.zeros_like(parts[0], dtype=np.float64)
    for p in parts:
        p = np.asarray(p, dtype=np.float64)
        m = float(np.mean(np.abs(p)))
        total += p / m if m > 0 else p
    return total


@CRITERIA.register("l1")
def l1(slices: Sequence[ChannelSlice]) -> np.ndarray:
    """Mean absolute value of the filters that produce each channel (Li et al., 2017)."""
    return _normalized_sum([np.abs(s.values).mean(axis=1) for s in _weights(slices)])


@CRITERIA.register("l2")
def l2(slices: Sequence[ChannelSlice]) -> np.ndarray:
    """L2 norm of the filters that produce each channel."""
    return _normalized_sum([np.sqrt((s.values.astype(np.float64) ** 2).sum(axis=1)) for s in _weights(slices)])


@CRITERIA.register("fpgm")
def fpgm(slices: Sequence[ChannelSlice]) -> np.ndarray:
    """Distance of each filter to all others (He et al., 2019): filters near the
    geometric median are replaceable, so small distance means unimportant."""
    parts = []
    for s in _weights(slices):
        w = s.values.astype(np.float64)
        sq = (w**2).sum(axis=1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (w @ w.T), 0.0)
        parts.append(np.sqrt(d2).sum(axis=1))
    return _normalized_sum(parts)


@CRITERIA.register("bn_scale")
def bn_scale(slices: Sequence[ChannelSlice]) -> np.ndarray:
    """|gamma| of the batch-norm layers on the channels (network slimming, Liu et al., 2017).

    Groups without a norm layer fall back to ``l1``.
    """
    gammas = [np.abs(s.values[:, 0]) for s in slices if s.is_norm and s.param in ("weight", "scale") and s.values.shape[1] == 1]
    return _normalized_sum(gammas) if gammas else l1(slices)


@CRITERIA.register("taylor")
def taylor(slices: Sequence[ChannelSlice]) -> np.ndarray:
    """First-order Taylor estimate of the loss change, |sum(w * dL/dw)| per channel (Molchanov et al., 2019).

    Needs gradients: pass ``loss_fn`` to :func:`slim_prune.prune_`.
    """
    parts = [np.abs((s.values.astype(np.float64) * s.grad).sum(axis=1)) for s in slices if s.grad is not None]
    if not parts:
        return l1(slices)
    return np.sum(parts, axis=0)


def _size(slices: Sequence[ChannelSlice]) -> int:
    for s in slices:
        if not callable(s._values):
            return int(s.values.shape[0])
    return int(slices[0].values.shape[0])


def needs_grad(name: str) -> bool:
    """Whether criterion ``name`` reads gradients."""
    return name in NEEDS_GRAD


def score(name: str, slices: Sequence[ChannelSlice]) -> np.ndarray:
    """Run criterion ``name`` and check its output has one finite score per channel."""
    fn: Any = CRITERIA.get(name)
    out = np.asarray(fn(slices), dtype=np.float64).reshape(-1)
    size = len(out) if not slices else _size(slices)
    if out.shape[0] != size:
        from slim_core import ConfigError

        raise ConfigError(f"criterion {name!r} returned {out.shape[0]} scores for a group of {size} channels")
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


__all__ += ["needs_grad", "score", "NEEDS_GRAD"]
