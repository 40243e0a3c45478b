"""GPTQ: quantize a Linear column by column, compensating each rounding error with the
inverse Hessian of the layer's inputs (Frantar et al., 2022).

Robust where naive implementations crash: input channels that never fire (zero Hessian
diagonal) are decoupled and rounded to nearest, and a Hessian that is not positive
definite gets more damping (x10 per retry) before falling back to round-to-nearest.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(256, 32)); w = rng.normal(size=(32, 8)).astype("float32")
    >>> q = gptq_quantize(w, x.T @ x, bits=4, group_size=16)
    >>> q.codes.shape
    (32, 8)
"""

from __future__ import annotations

import warnings

import numpy as np

from slim_quant.weight_only.packing import QuantizedWeight, group_params, quantize_groups, quantize_with, search_group_params

__all__ = ["gptq_quantize", "HessianAccumulator"]


class HessianAccumulator:
    """Running ``H = 2/N * sum x x^T`` over the rows of the inputs of one layer."""

    def __init__(self, n_in: int) -> None:
        self.h = np.zeros((n_in, n_in), dtype=np.float64)
        self.n = 0

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32).reshape(-1, self.h.shape[0])
        m = x.shape[0]
        if m == 0:
            return
        self.h *= self.n / (self.n + m)
        self.n += m
        # the product in float32 (about 2x faster than float64), the running sum in float64
        self.h += (x.T @ x).astype(np.float64) * (2.0 / self.n)


def _inverse_cholesky(h: np.ndarray, damp_percent: float) -> np.ndarray | None:
    """Upper Cholesky factor of ``(H + damp I)^-1``; None when damping cannot fix H."""
    n = h.shape[0]
    mean_diag = float(np.mean(np.diag(h))) or 1.0
    damp = damp_percent * mean_diag
    for _ in range(6):
        try:
            hd = h + damp * np.eye(n)
            hinv = np.linalg.inv(np.linalg.cholesky(hd))
            hinv = hinv.T @ hinv
            u = np.linalg.cholesky(hinv).T
            if np.all(np.isfinite(u)):
                return u
        except np.linalg.LinAlgError:
            pass
        damp *= 10.0
    return None


def gptq_quantize(
    w: np.ndarray,
    hessian: np.ndarray,
    bits: int,
    group_size: int = -1,
    symmetric: bool = True,
    *,
    damp_percent: float = 0.01,
    block_size: int = 128,
    act_order: bool = True,
    clip_search: bool = False,
    name: str = "weight",
) -> QuantizedWeight:
    """GPTQ quantization of one ``[in, out]`` weight.

    Args:
        w: float weight in Paddle's ``[in, out]`` layout.
        hessian: ``[in, in]`` second moment of the layer inputs (see :class:`HessianAccumulator`).
        bits, group_size, symmetric: the integer grid (group_size -1: per output channel).
        damp_percent: diagonal damping as a fraction of the mean Hessian diagonal.
        block_size: columns per lazy update block.
        act_order: process input channels by decreasing Hessian diagonal; group grids are
            then fixed up front from the original weight (static groups), so codes keep the
            natural group layout.
        clip_search: choose each group's range by searching shrink ratios (:data:`CLIP_RATIOS`) that
            minimize the Hessian-diagonal-weighted rounding error, instead of the min-max range.

    Returns:
        The quantized weight (codes in the original channel order).
    """
    wt = np.asarray(w, dtype=np.float64).T.copy()  # [out, in]: columns are input channels
    n_out, n_in = wt.shape
    g = n_in if group_size == -1 else group_size
    h = np.asarray(hessian, dtype=np.float64).copy()
    dead = np.diag(h) <= 0
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    h[dead, dead] = 1.0  # decoupled: the column is rounded to nearest and passes no error on

    static = g == n_in or act_order
    scales = np.ones((n_in // g, n_out), dtype=np.float64)
    zeros = None if symmetric else np.zeros((n_in // g, n_out), dtype=np.float64)
    hdiag = np.diag(h).astype(np.float32)

    def params(cols: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Grid of one group from its ``[out, g]`` columns (input channels ``first..first+g``)."""
        cols = cols.T.astype(np.float32)
        if clip_search:
            return search_group_params(cols, bits, symmetric, hdiag[first : first + g])
        return group_params(cols, bits, symmetric)

    if static:
        for grp in range(n_in // g):
            scales[grp], z0 = params(wt[:, grp * g : (grp + 1) * g], grp * g)
            if zeros is not None:
                zeros[grp] = z0

    perm = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(n_in)
    wt = wt[:, perm]
    h = h[np.ix_(perm, perm)]
    u = _inverse_cholesky(h, damp_percent)
    if u is None:
        warnings.warn(f"GPTQ: the Hessian of {name!r} stays singular after damping; rounding to nearest instead", stacklevel=2)
        return quantize_groups(np.asarray(w, dtype=np.float32), bits, group_size, symmetric)

    # The sweep itself runs in float32 (the inverse above needed float64); it is ~2x faster.
    wt, u = wt.astype(np.float32), u.astype(np.float32)
    codes = np.zeros((n_out, n_in), dtype=np.int16)
    for i1 in range(0, n_in, block_size):
        i2 = min(i1 + block_size, n_in)
        w1 = wt[:, i1:i2].copy()
        err1 = np.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(perm[i1 + i])
            grp = col // g
            if not static and col % g == 0:
                current = np.concatenate([w1[:, i:], wt[:, i2:]], axis=1)[:, :g]
                s, z = params(current, col)
                scales[grp] = s
                if zeros is not None:
                    zeros[grp] = z
            s = scales[grp]
            z = None if zeros is None else zeros[grp]
            col_w = w1[:, i]
            q = quantize_with(col_w, s, z, bits)
            deq = (q - z) * s if z is not None else q * s
            codes[:, i1 + i] = q
            e = (col_w - deq) / u1[i, i]
            w1[:, i:] -= np.outer(e, u1[i, i:])
            err1[:, i] = e
        wt[:, i2:] -= err1 @ u[i1:i2, i2:]

    out = np.empty_like(codes)
    out[:, perm] = codes
    return QuantizedWeight(out.T.copy(), scales.astype(np.float32), None if zeros is None else zeros.astype(np.float32), bits, g)
