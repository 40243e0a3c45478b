"""Fold BatchNorm into the conv or linear layer that feeds it, proven on the shared :class:`ModelGraph`.

For a BatchNorm in inference mode, ``y = gamma * (z - mean) / sqrt(var + eps) + beta``
with ``z = W x + b`` is the same as a conv/linear with ``W' = W * s`` and
``b' = (b - mean) * s + beta`` where ``s = gamma / sqrt(var + eps)``; the BN
becomes an ``Identity``. Which BN follows which conv is read from the graph
:func:`slim_core.trace` builds (the same one pruning, analysis and quantization
read), never guessed from attribute order. slim-deploy (``fold_bn``,
re-parameterization) and slim-quant (folding before calibration, QAT) share it.

Example:
    >>> import paddle
    >>> from slim_core.bn_fold import fold_bn
    >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4))
    >>> folded = fold_bn(net, [None, 3, 8, 8])
    >>> type(folded[1]).__name__
    'Identity'
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from slim_core._paddle import require_paddle
from slim_core.graph.ir import VIEW_OPS, ModelGraph, Node, Value
from slim_core.graph.trace import trace
from slim_core.layers import get_sublayer, set_sublayer
from slim_core.rollback import in_place
from slim_core.spec import InputSpecLike, check_spec_matches_forward, normalize_input_spec

__all__ = ["fold_bn", "fold_bn_", "bn_scale_shift", "LinearBNPair", "find_linear_bn_pairs", "linear_bn_pairs"]

_LINEAR_OPS = {"pd_op.conv2d": "conv", "pd_op.conv3d": "conv", "pd_op.depthwise_conv2d": "conv", "pd_op.matmul": "linear"}
_WEIGHT_OPERAND = {"pd_op.conv2d": "filter", "pd_op.conv3d": "filter", "pd_op.depthwise_conv2d": "filter", "pd_op.matmul": "y"}
_BN_OPS = {"pd_op.batch_norm_", "pd_op.batch_norm"}


@dataclass(frozen=True)
class LinearBNPair:
    """A conv or linear layer whose only consumer is a BatchNorm layer (paths are sublayer names)."""

    linear: str
    bn: str


def _param_uses(graph: ModelGraph) -> dict[str, int]:
    """How many ops read each parameter (a reshape view of it counts as its consumers)."""
    uses: dict[str, int] = {}
    for v in graph.values:
        if v.param is not None and v.producer is None:
            uses[v.param] = uses.get(v.param, 0) + sum(_view_uses(c) for c in v.consumers)
    return uses


def _view_uses(node: Node) -> int:
    if node.type in VIEW_OPS and node.outputs and node.outputs[0].param is not None:
        return sum(_view_uses(c) for c in node.outputs[0].consumers)
    return 1


def _single_use(value: Value | None) -> bool:
    return value is not None and len(value.consumers) == 1


def linear_bn_pairs(graph: ModelGraph, model: Any) -> list[LinearBNPair]:
    """Conv/Linear layers of ``model`` whose output goes only into a BatchNorm, read from ``graph``.

    A pair is reported only when: the BN's input is the conv/linear output (after
    its own bias add), that value has no other consumer, each layer is called
    exactly once in the forward pass, and the layer types are the plain Paddle ones.
    """
    paddle = require_paddle()
    nn = paddle.nn
    uses = _param_uses(graph)
    pairs: list[LinearBNPair] = []
    for node in graph.nodes_of_type(*_BN_OPS):
        mean = node.params.get("mean")
        x = node.input("x")
        if mean is None or mean not in graph.params or uses.get(mean) != 1 or not _single_use(x):
            continue
        bn_path = graph.params[mean].layer
        prod = x.producer if x is not None else None
        if prod is not None and prod.type == "pd_op.add":  # the conv/linear bias
            bias = prod.params.get("y")
            if bias is None or uses.get(bias) != 1:
                continue
            x = prod.input("x")
            if not _single_use(x):
                continue
            prod = x.producer if x is not None else None
        if prod is None or prod.type not in _LINEAR_OPS:
            continue
        weight = prod.params.get(_WEIGHT_OPERAND[prod.type])
        if weight is None or weight not in graph.params or uses.get(weight) != 1:
            continue
        lin_path = graph.params[weight].layer
        try:
            lin, bn = get_sublayer(model, lin_path), get_sublayer(model, bn_path)
        except KeyError:  # a path the graph names but the Layer registry does not resolve: leave it unfolded
            continue
        ok_lin = isinstance(lin, (nn.Conv2D, nn.Conv3D)) or (isinstance(lin, nn.Linear) and _LINEAR_OPS[prod.type] == "linear")
        ok_bn = isinstance(bn, nn.layer.norm._BatchNormBase) or (isinstance(bn, nn.BatchNorm) and getattr(bn, "_act", None) is None)
        if ok_lin and ok_bn and bn_path and lin_path:
            pairs.append(LinearBNPair(lin_path, bn_path))
    return pairs


def find_linear_bn_pairs(model: Any, input_spec: InputSpecLike) -> list[LinearBNPair]:
    """Trace ``model`` (in eval mode, left as it was) and return its foldable ``(linear, bn)`` pairs.

    Raises:
        ConfigError: the input spec is malformed or does not match ``forward``.
        DataError / UnsupportedOpError: Paddle cannot trace the model with that spec.
    """
    specs = normalize_input_spec(input_spec, dynamic_batch=False)
    check_spec_matches_forward(model, specs)
    return linear_bn_pairs(trace(model, input_spec=specs), model)


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
        input_spec: the input shape(s) used to trace the model (see :func:`slim_core.spec.normalize_input_spec`).

    Returns:
        The folded ``(linear, bn)`` pairs; each BN is now ``paddle.nn.Identity``.

    Raises:
        ConfigError / DataError / UnsupportedOpError: bad input spec, or the model cannot be
            traced (the model is left untouched: tracing runs before anything changes).

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
