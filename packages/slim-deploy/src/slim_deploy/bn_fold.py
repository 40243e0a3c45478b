"""Fold BatchNorm into the conv or linear layer that feeds it.

For a BatchNorm in inference mode, ``y = gamma * (z - mean) / sqrt(var + eps) + beta``
with ``z = W x + b`` is the same as a conv/linear with ``W' = W * s`` and
``b' = (b - mean) * s + beta`` where ``s = gamma / sqrt(var + eps)``; the BN
becomes an ``Identity``. Which BN follows which conv is read from the traced
program (see :func:`find_linear_bn_pairs`), never guessed from attribute order.

Example:
    >>> folded = fold_bn(model, input_spec=[None, 3, 32, 32])   # doctest: +SKIP
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from slim_core import require_paddle
from slim_core.rollback import in_place
from slim_deploy._graph import LinearBNPair, find_linear_bn_pairs, get_sublayer, set_sublayer
from slim_deploy.spec import InputSpecLike

__all__ = ["fold_bn", "fold_bn_", "bn_scale_shift", "LinearBNPair", "find_linear_bn_pairs"]


def bn_scale_shift(bn: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(s, t)`` such that the BN in inference mode computes ``s * z + t`` per channel."""
    mean = np.asarray(bn._mean.numpy(), dtype="float64")
    var = np.asarray(bn._variance.numpy(), dtype="float64")
    gamma = np.asarray(bn.weight.numpy(), dtype="float64") if getattr(bn, "weight", None) is not None else np.ones_like(mean)
    beta = np.asarray(bn.bias.numpy(), dtype="float64") if getattr(bn, "bias", None) is not None else np.zeros_like(mean)
    s = gamma / np.sqrt(var + float(bn._epsilon))
    return s, beta - mean * s


def _fold_pair(model: Any, pair: LinearBNPair) -> None:
    paddle = require_paddle()
    lin = get_sublayer(model, pair.linear)
    bn = get_sublayer(model, pair.bn)
    s, t = bn_scale_shift(bn)
    w = np.asarray(lin.weight.numpy(), dtype="float64")
    is_linear = isinstance(lin, paddle.nn.Linear)
    out_ch = w.shape[1] if is_linear else w.shape[0]
    if out_ch != s.shape[0]:
        raise ValueError(f"{pair.linear} has {out_ch} output channels but {pair.bn} normalizes {s.shape[0]}")
    w = w * (s[None, :] if is_linear else s.reshape((-1,) + (1,) * (w.ndim - 1)))
    b = np.asarray(lin.bias.numpy(), dtype="float64") if lin.bias is not None else np.zeros(out_ch)
    b = b * s + t
    dtype = lin.weight.dtype
    lin.weight.set_value(paddle.to_tensor(w.astype("float32")).astype(dtype))
    if lin.bias is None:
        lin.bias = lin.create_parameter(shape=[out_ch], dtype=dtype, is_bias=True)
    lin.bias.set_value(paddle.to_tensor(b.astype("float32")).astype(dtype))
    set_sublayer(model, pair.bn, paddle.nn.Identity())


@in_place
def fold_bn_(model: Any, input_spec: InputSpecLike) -> list[LinearBNPair]:
    """Fold every BatchNorm that directly follows a conv/linear into it, in place.

    Args:
        model: a ``paddle.nn.Layer``; its BN statistics are used as in ``eval()``.
        input_spec: the input shape(s) used to trace the model (see :func:`normalize_input_spec`).

    Returns:
        The folded ``(linear, bn)`` pairs; each BN is now ``paddle.nn.Identity``.

    Raises:
        ConfigError / ExportError: bad input spec, or the model cannot be traced (the
            model is left untouched: tracing runs on a copy before anything changes).

    Example:
        >>> pairs = fold_bn_(model, [None, 3, 32, 32])   # doctest: +SKIP
    """
    pairs = find_linear_bn_pairs(model, input_spec)
    for pair in pairs:
        _fold_pair(model, pair)
    return pairs


def fold_bn(model: Any, input_spec: InputSpecLike) -> Any:
    """A copy of ``model`` in eval mode with every foldable BatchNorm folded; ``model`` is unchanged.

    Args:
        model: a ``paddle.nn.Layer``.
        input_spec: the input shape(s) used to trace the model.

    Returns:
        The folded copy (``paddle.nn.Layer``).

    Example:
        >>> deploy_model = fold_bn(model, [None, 3, 224, 224])   # doctest: +SKIP
    """
    twin = copy.deepcopy(model)
    twin.eval()
    fold_bn_(twin, input_spec)
    return twin
