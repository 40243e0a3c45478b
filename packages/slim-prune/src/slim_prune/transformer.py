"""Attention-head and FFN-neuron pruning for ``paddle.nn`` transformer layers.

Heads are removed whole: the q/k/v projections lose the head's ``head_dim``
output columns, ``out_proj`` the matching input rows, and ``num_heads`` shrinks,
so the layer computes exactly what the original computes with those heads'
outputs set to zero. FFN neurons are removed from ``linear1`` (outputs) and
``linear2`` (inputs) of each ``TransformerEncoderLayer`` / ``TransformerDecoderLayer``.

Example:
    >>> import paddle
    >>> enc = paddle.nn.TransformerEncoder(paddle.nn.TransformerEncoderLayer(64, 4, 128), 2)
    >>> res = prune_transformer_(enc, TransformerPruneConfig(head_ratio=0.5, ffn_ratio=0.5))
    >>> enc.layers[0].self_attn.num_heads
    2
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from slim_core import ConfigError, SlimConfig, check_range, require_paddle
from slim_core.rollback import in_place
from slim_prune._util import check_layer_names
from slim_prune.layers import handler_for
from slim_prune.planner import keep_count, removal_indices

__all__ = ["TransformerPruneConfig", "TransformerPruneResult", "prune_transformer_", "prune_heads_", "prune_ffn_", "head_scores"]


@dataclass(frozen=True)
class TransformerPruneConfig(SlimConfig):
    """Which fraction of attention heads and FFN neurons to remove.

    Args:
        head_ratio: fraction in [0, 1) of the heads of every MultiHeadAttention removed (at least one head stays).
        ffn_ratio: fraction in [0, 1) of the hidden neurons of every encoder/decoder layer's FFN removed.
        criterion: ``"l1"`` (weight magnitude) or ``"taylor"`` (|w * grad|; needs ``loss_fn``).
        ignored_layers: layer names (attention or encoder layers) left untouched.
        round_to: keep FFN widths a multiple of this.
    """

    head_ratio: float = 0.0
    ffn_ratio: float = 0.0
    criterion: Literal["l1", "taylor"] = "l1"
    ignored_layers: list[str] = field(default_factory=list)
    round_to: int = 1

    def validate(self) -> None:
        check_range("TransformerPruneConfig.head_ratio", self.head_ratio, 0.0, 1.0, hi_open=True)
        check_range("TransformerPruneConfig.ffn_ratio", self.ffn_ratio, 0.0, 1.0, hi_open=True)
        check_range("TransformerPruneConfig.round_to", self.round_to, 1)


@dataclass
class TransformerPruneResult:
    """Removed heads per attention layer and removed FFN neurons per encoder layer."""

    heads: dict[str, list[int]] = field(default_factory=dict)
    neurons: dict[str, list[int]] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0


def _heads_of(arr: np.ndarray, axis: int, num_heads: int, head_dim: int) -> np.ndarray:
    """``[num_heads, k]`` view of a projection's per-head slices along ``axis``."""
    a = np.moveaxis(arr, axis, 0)
    return a.reshape(num_heads, head_dim * int(np.prod(a.shape[1:])) if a.ndim > 1 else head_dim)


def _importance(parts: list[tuple[Any, int]], rows: int, unit: int, grads: dict[int, np.ndarray] | None) -> np.ndarray:
    total = np.zeros(rows)
    for p, axis in parts:
        if p is None:
            continue
        w = _heads_of(np.asarray(p.numpy(), dtype=np.float64), axis, rows, unit)
        if grads is not None and id(p) in grads:
            g = _heads_of(grads[id(p)].astype(np.float64), axis, rows, unit)
            s = np.abs((w * g).sum(axis=1))
        else:
            s = np.abs(w).mean(axis=1)
        m = s.mean()
        total += s / m if m > 0 else s
    return total


def _attn_parts(attn: Any) -> list[tuple[Any, int]]:
    return [
        (attn.q_proj.weight, 1),
        (attn.q_proj.bias, 0),
        (attn.k_proj.weight, 1),
        (attn.k_proj.bias, 0),
        (attn.v_proj.weight, 1),
        (attn.v_proj.bias, 0),
        (attn.out_proj.weight, 0),
    ]


def head_scores(attn: Any, grads: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """Importance of each head of a ``MultiHeadAttention`` (higher = more important)."""
    return _importance(_attn_parts(attn), int(attn.num_heads), int(attn.head_dim), grads)


@in_place
def prune_heads_(attn: Any, heads: Sequence[int]) -> None:
    """Remove the given head indices from a ``paddle.nn.MultiHeadAttention`` in place.

    Raises:
        ConfigError: an index out of range, or all heads would be removed (nothing changed).
    """
    nh, hd = int(attn.num_heads), int(attn.head_dim)
    heads = sorted({int(h) for h in heads})
    if any(h < 0 or h >= nh for h in heads):
        raise ConfigError(f"head indices {heads} out of range for {nh} heads")
    if len(heads) >= nh:
        raise ConfigError(f"cannot remove all {nh} heads of an attention layer; keep at least one")
    if not heads:
        return
    keep = [h * hd + j for h in range(nh) if h not in heads for j in range(hd)]
    for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
        handler_for(proj).prune_out(proj, keep)
    handler_for(attn.out_proj).prune_in(attn.out_proj, keep)
    handler_for(attn).sync(attn)


def _ffn_pair(layer: Any) -> tuple[Any, Any] | None:
    l1, l2 = getattr(layer, "linear1", None), getattr(layer, "linear2", None)
    paddle = require_paddle()
    if isinstance(l1, paddle.nn.Linear) and isinstance(l2, paddle.nn.Linear) and l1.weight.shape[1] == l2.weight.shape[0]:
        return l1, l2
    return None


@in_place
def prune_ffn_(layer: Any, neurons: Sequence[int]) -> None:
    """Remove hidden neurons of an encoder/decoder layer's FFN (``linear1`` -> ``linear2``) in place."""
    pair = _ffn_pair(layer)
    if pair is None:
        raise ConfigError(f"{type(layer).__name__} has no linear1/linear2 feed-forward pair")
    l1, l2 = pair
    width = int(l1.weight.shape[1])
    drop = {int(i) for i in neurons}
    if any(i < 0 or i >= width for i in drop):
        raise ConfigError(f"neuron indices out of range for an FFN of width {width}")
    if len(drop) >= width:
        raise ConfigError(f"cannot remove all {width} FFN neurons")
    keep = [i for i in range(width) if i not in drop]
    handler_for(l1).prune_out(l1, keep)
    handler_for(l2).prune_in(l2, keep)


@in_place
def prune_transformer_(
    model: Any, config: TransformerPruneConfig, *, loss_fn: Callable[[Any], Any] | None = None
) -> TransformerPruneResult:
    """Remove the least important heads and FFN neurons of every transformer layer in ``model``.

    Args:
        model: any Layer holding ``paddle.nn.MultiHeadAttention`` and/or
            ``TransformerEncoderLayer``/``TransformerDecoderLayer`` sublayers.
        config: :class:`TransformerPruneConfig`.
        loss_fn: ``loss_fn(model) -> scalar loss`` for ``criterion="taylor"``.

    Returns:
        :class:`TransformerPruneResult` (removed head / neuron indices by layer name).

    Raises:
        ConfigError: bad config, unknown ignored layer, taylor without loss_fn, no transformer layer.
    """
    paddle = require_paddle()
    if not isinstance(config, TransformerPruneConfig):
        raise ConfigError(f"config must be a TransformerPruneConfig, got {type(config).__name__}")
    check_layer_names(model, config.ignored_layers, "TransformerPruneConfig.ignored_layers")
    if config.criterion == "taylor" and loss_fn is None:
        raise ConfigError("criterion 'taylor' needs loss_fn=lambda model: <scalar loss on a batch>")

    def ignored(name: str) -> bool:
        return any(name == ig or name.startswith(ig + ".") for ig in config.ignored_layers)

    subs = [(n, layer) for n, layer in model.named_sublayers() if not ignored(n)]
    attns = [(n, layer) for n, layer in subs if isinstance(layer, paddle.nn.MultiHeadAttention)]
    ffns = [(n, layer) for n, layer in subs if _ffn_pair(layer) is not None]
    if not attns and not ffns:
        raise ConfigError("the model holds no paddle.nn.MultiHeadAttention or transformer FFN layer to prune")
    grads = None
    if config.criterion == "taylor" and loss_fn is not None:
        was = bool(model.training)
        model.eval()
        loss = loss_fn(model)
        loss.backward()
        if was:
            model.train()
        grads = {id(p): np.asarray(p.grad.numpy()) for p in model.parameters() if p.grad is not None}
        model.clear_gradients(set_to_zero=False)
    before = int(sum(int(np.prod(p.shape)) for p in model.parameters()))
    # Plan everything first, then change the model.
    head_plan = {}
    for n, attn in attns:
        nh = int(attn.num_heads)
        drop = nh - keep_count(nh, config.head_ratio)
        if drop:
            head_plan[n] = removal_indices(head_scores(attn, grads), drop)
    ffn_plan = {}
    for n, layer in ffns:
        l1, l2 = _ffn_pair(layer)
        width = int(l1.weight.shape[1])
        drop = width - keep_count(width, config.ffn_ratio, config.round_to)
        if drop:
            s = _importance([(l1.weight, 1), (l1.bias, 0), (l2.weight, 0)], width, 1, grads)
            ffn_plan[n] = removal_indices(s, drop)
    named = dict(subs)
    for n, heads in head_plan.items():
        prune_heads_(named[n], heads)
    for n, neurons in ffn_plan.items():
        prune_ffn_(named[n], neurons)
    after = int(sum(int(np.prod(p.shape)) for p in model.parameters()))
    return TransformerPruneResult(head_plan, ffn_plan, before, after)
