"""AWQ: activation-aware weight quantization (Lin et al., 2023).

Input channels that carry large activations matter most; scaling their weight rows up by
``s`` before rounding (and the input down by ``s``) lowers their relative rounding error.
The exponent of ``s = mean|x|^r`` is searched on a grid against the layer's output error
on calibration rows (``r = 0`` is plain round-to-nearest, so the search never loses to
it on those rows); an optional per-group clipping search then shrinks each group's range.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(256, 32)).astype("float32"); w = rng.normal(size=(32, 8)).astype("float32")
    >>> q, inv_s = awq_quantize(w, x, bits=4, group_size=16)
    >>> inv_s.shape
    (32,)
"""

from __future__ import annotations

import numpy as np

from slim_quant.weight_only.packing import CLIP_RATIOS, QuantizedWeight, quantize_groups

__all__ = ["awq_quantize", "CLIP_RATIOS"]


def _out_err(x: np.ndarray, w_ref_out: np.ndarray, wq: np.ndarray) -> float:
    d = x @ wq - w_ref_out
    return float(np.mean(d * d))


def _clip_search(x: np.ndarray, w: np.ndarray, bits: int, g: int, symmetric: bool) -> np.ndarray:
    """Per ``[group, out]`` clipping ratio minimizing that group's share of the output error."""
    n_in, n_out = w.shape
    groups = n_in // g
    best = np.ones((groups, n_out), dtype=np.float32)
    best_err = np.full((groups, n_out), np.inf)
    xg = [np.ascontiguousarray(x[:, gi * g : (gi + 1) * g]) for gi in range(groups)]
    for ratio in CLIP_RATIOS:
        clip = np.full((groups, n_out), ratio, dtype=np.float32)
        delta = w - quantize_groups(w, bits, g, symmetric, clip=clip).dequantize()
        for gi in range(groups):
            part = xg[gi] @ delta[gi * g : (gi + 1) * g]
            err = np.einsum("ij,ij->j", part, part)
            better = err < best_err[gi]
            best_err[gi][better] = err[better]
            best[gi][better] = ratio
    return best


def awq_quantize(
    w: np.ndarray,
    x: np.ndarray,
    bits: int,
    group_size: int = -1,
    symmetric: bool = True,
    *,
    grid: int = 20,
    clip: bool = True,
    clip_rows: int = 512,
) -> tuple[QuantizedWeight, np.ndarray]:
    """AWQ quantization of one ``[in, out]`` weight.

    Args:
        w: float weight ``[in, out]``.
        x: calibration input rows ``[n, in]`` (a subsample is enough).
        grid: exponents ``r`` tried in ``[0, 1)``.
        clip: also search per-group clipping ratios.
        clip_rows: rows used by the clipping search.

    Returns:
        ``(quantized, input_scale)``: the codes of ``w * s`` and ``1 / s``, the factor the
        layer multiplies its input by (so that ``(x / s) @ (w * s) == x @ w``).
    """
    w = np.asarray(w, dtype=np.float32)
    x = np.asarray(x, dtype=np.float32).reshape(-1, w.shape[0])
    n_in = w.shape[0]
    g = n_in if group_size == -1 else group_size
    ref = x @ w
    x_mean = np.abs(x).mean(axis=0) + 1e-8
    best_s, best_err = np.ones(n_in, dtype=np.float32), np.inf
    for k in range(grid):
        r = k / grid
        s = np.power(x_mean, r).clip(min=1e-4)
        s = (s / np.sqrt(s.max() * s.min())).astype(np.float32)
        wq = quantize_groups(w * s[:, None], bits, g, symmetric).dequantize() / s[:, None]
        err = _out_err(x, ref, wq)
        if err < best_err:
            best_err, best_s = err, s
    ws = w * best_s[:, None]
    ratios = None
    if clip:
        xs = x[:clip_rows] / best_s[None, :]
        ratios = _clip_search(xs, ws, bits, g, symmetric)
    q = quantize_groups(ws, bits, g, symmetric, clip=ratios)
    return q, (1.0 / best_s).astype(np.float32)
