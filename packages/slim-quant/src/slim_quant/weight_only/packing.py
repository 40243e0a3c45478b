"""Group-wise weight quantization and int4 packing (numpy primitives).

Layout follows ``paddle.nn.Linear``: a weight is ``[in, out]`` and groups run along the
input dimension, so a group scale array is ``[in // group_size, out]`` (``[1, out]`` per
output channel). Integer codes are stored unsigned for 4 bits (``q + 8`` when symmetric)
and two codes share one byte: row ``2i`` in the low nibble, row ``2i + 1`` in the high one.

Example:
    >>> import numpy as np
    >>> w = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    >>> q = quantize_groups(w, bits=4, group_size=32)
    >>> packed = pack_int4(q.codes, signed=True)
    >>> packed.shape, packed.dtype
    ((32, 8), dtype('uint8'))
    >>> bool(np.array_equal(unpack_int4(packed), q.codes))
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slim_core import ConfigError

__all__ = [
    "QuantizedWeight",
    "qrange",
    "group_params",
    "search_group_params",
    "CLIP_RATIOS",
    "quantize_with",
    "quantize_groups",
    "dequantize",
    "pack_int4",
    "unpack_int4",
    "check_group_size",
]


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer code range ``(qmin, qmax)`` of the stored (possibly offset) codes."""
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def check_group_size(in_features: int, group_size: int, bits: int, name: str = "weight") -> int:
    """Return the effective group size; raise ConfigError when it does not fit ``in_features``."""
    g = in_features if group_size == -1 else group_size
    if in_features % g:
        raise ConfigError(
            f"group_size={group_size} does not divide the input width {in_features} of layer {name!r}; "
            f"use a divisor of {in_features}, -1 (per channel), or skip the layer"
        )
    if bits == 4 and in_features % 2:
        raise ConfigError(
            f"layer {name!r} has an odd input width {in_features}, which 4-bit packing (two rows per byte) cannot hold; skip it"
        )
    return g


@dataclass
class QuantizedWeight:
    """Integer codes plus the per-group grid of one ``[in, out]`` weight.

    Attributes:
        codes: int16 codes ``[in, out]`` in ``qrange(bits, symmetric)``.
        scales: float32 ``[groups, out]``.
        zeros: float32 ``[groups, out]`` zero points (None when symmetric).
    """

    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray | None
    bits: int
    group_size: int

    def dequantize(self) -> np.ndarray:
        return dequantize(self.codes, self.scales, self.zeros, self.group_size)


def group_params(w: np.ndarray, bits: int, symmetric: bool, clip: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray | None]:
    """Scale (and zero point) of each column of ``w`` (``[rows, out]``, one group), shrunk by ``clip``."""
    qmin, qmax = qrange(bits, symmetric)
    if symmetric:
        amax = np.abs(w).max(axis=0) * clip
        scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
        return scale, None
    hi = np.maximum(w.max(axis=0), 0.0) * clip
    lo = np.minimum(w.min(axis=0), 0.0) * clip
    scale = np.where(hi > lo, (hi - lo) / (qmax - qmin), 1.0).astype(np.float32)
    zero = np.clip(np.round(-lo / scale), qmin, qmax).astype(np.float32)
    return scale, zero


#: Shrink factors of a group's range tried by the clipping searches (AWQ auto-clip, GPTQ ``clip_search``).
CLIP_RATIOS: tuple[float, ...] = tuple(float(r) for r in np.round(np.linspace(1.0, 0.5, 11), 3))


def search_group_params(
    w: np.ndarray, bits: int, symmetric: bool, importance: np.ndarray | None = None, ratios: tuple[float, ...] = CLIP_RATIOS
) -> tuple[np.ndarray, np.ndarray | None]:
    """Like :func:`group_params`, with each column's range shrunk by the ratio of ``ratios`` that
    minimizes its rounding error ``sum_i importance_i * (w_i - deq(w_i))^2`` (``importance``: one
    weight per row, e.g. a Hessian diagonal; default all ones). Ratio 1.0 (min-max) is always tried.

    Example:
        >>> w = np.random.default_rng(0).standard_t(3, size=(128, 4)).astype("float32")
        >>> s, _ = search_group_params(w, 4, True)
        >>> bool(np.all(s <= group_params(w, 4, True)[0] + 1e-7))
        True
    """
    w = np.asarray(w, dtype=np.float32)
    imp = np.ones((w.shape[0], 1), np.float32) if importance is None else np.asarray(importance, np.float32).reshape(-1, 1)
    best_s, best_z = group_params(w, bits, symmetric)
    best_err = np.full(w.shape[1], np.inf)
    for ratio in ratios:
        s, z = group_params(w, bits, symmetric, ratio)
        err = (imp * (w - _fake(w, s, z, bits)) ** 2).sum(axis=0)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, s, best_s)
        if z is not None:
            best_z = np.where(better, z, best_z)
    return best_s.astype(np.float32), None if best_z is None else best_z.astype(np.float32)


def quantize_with(w: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, bits: int) -> np.ndarray:
    """Integer codes of ``w`` (``[rows, out]``) on a given grid (round to nearest, clipped)."""
    symmetric = zero is None
    qmin, qmax = qrange(bits, symmetric)
    q = np.round(w / scale)
    if not symmetric:
        q = q + zero
    return np.clip(q, qmin, qmax)


def _fake(w: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, bits: int) -> np.ndarray:
    q = quantize_with(w, scale, zero, bits)
    return (q - zero) * scale if zero is not None else q * scale


def quantize_groups(w: np.ndarray, bits: int, group_size: int, symmetric: bool = True, clip: np.ndarray | None = None) -> QuantizedWeight:
    """Round-to-nearest group-wise quantization of an ``[in, out]`` weight.

    Args:
        clip: optional ``[groups, out]`` shrink factors of the group range (AWQ clipping).
    """
    w = np.asarray(w, dtype=np.float32)
    n_in, n_out = w.shape
    g = n_in if group_size == -1 else group_size
    groups = n_in // g
    wg = w.reshape(groups, g, n_out)
    c = 1.0 if clip is None else clip[:, None, :]
    qmin, qmax = qrange(bits, symmetric)
    if symmetric:
        amax = np.abs(wg).max(axis=1, keepdims=True) * c
        scales = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
        codes = np.clip(np.round(wg / scales), qmin, qmax)
        zeros = None
    else:
        hi = np.maximum(wg.max(axis=1, keepdims=True), 0.0) * c
        lo = np.minimum(wg.min(axis=1, keepdims=True), 0.0) * c
        scales = np.where(hi > lo, (hi - lo) / (qmax - qmin), 1.0).astype(np.float32)
        zeros = np.clip(np.round(-lo / scales), qmin, qmax).astype(np.float32)
        codes = np.clip(np.round(wg / scales) + zeros, qmin, qmax)
        zeros = zeros[:, 0, :]
    return QuantizedWeight(codes.reshape(n_in, n_out).astype(np.int16), scales[:, 0, :], zeros, bits, g)


def dequantize(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, group_size: int) -> np.ndarray:
    """Float ``[in, out]`` weight from codes and per-group grid."""
    n_in, n_out = codes.shape
    g = n_in if group_size == -1 else group_size
    q = codes.astype(np.float32).reshape(n_in // g, g, n_out)
    if zeros is not None:
        q = q - zeros[:, None, :]
    return (q * scales[:, None, :]).reshape(n_in, n_out)


def pack_int4(codes: np.ndarray, signed: bool = True) -> np.ndarray:
    """Pack 4-bit codes ``[in, out]`` (signed -8..7, or unsigned 0..15) into uint8 ``[in // 2, out]``."""
    c = np.asarray(codes).astype(np.int16)
    if c.shape[0] % 2:
        raise ConfigError(f"cannot pack an odd number of rows ({c.shape[0]}) two per byte")
    lo, hi = (-8, 7) if signed else (0, 15)
    if c.min() < lo or c.max() > hi:
        raise ConfigError(f"codes span [{c.min()}, {c.max()}], outside the {'signed' if signed else 'unsigned'} 4-bit range")
    if signed:
        c = c + 8
    return (c[0::2] | (c[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, signed: bool = True) -> np.ndarray:
    """Inverse of :func:`pack_int4`: int8 codes ``[2 * rows, out]`` (signed -8..7 when ``signed``)."""
    p = np.asarray(packed, dtype=np.uint8)
    lo = (p & 0x0F).astype(np.int8)
    hi = (p >> 4).astype(np.int8)
    out = np.empty((p.shape[0] * 2,) + p.shape[1:], dtype=np.int8)
    out[0::2], out[1::2] = lo, hi
    return out - 8 if signed else out
