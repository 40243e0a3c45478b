"""Test helpers for the graph tests: physically slice the parameters of channel groups.

This is deliberately minimal (real pruning lives in slim-prune); it exists to prove
that the groups are complete and consistent: after slicing, the forward must run.
"""

from __future__ import annotations

import functools

import numpy as np
import paddle

import slim_core
from slim_core.graph.zoo import input_shape


@functools.cache
def zoo_graph(name: str) -> tuple[paddle.nn.Layer, slim_core.ModelGraph, list[int]]:
    """(model, graph, input shape) for a paddle.vision model, traced once per session."""
    paddle.seed(0)
    model = getattr(paddle.vision.models, name)(num_classes=10)
    shape = input_shape(name)
    return model, slim_core.trace(model, input_spec=[shape]), shape


def prune_groups(model: paddle.nn.Layer, groups, drop_every: int = 4) -> int:
    """Remove every ``drop_every``-th channel of each prunable group; returns how many groups were cut."""
    removal: dict[tuple[str, str, int], set[int]] = {}
    cut = 0
    for g in groups:
        if g.frozen or g.size < 2:
            continue
        drop = [i for i in range(g.size) if i % drop_every == 0]
        if len(drop) >= g.size:
            continue
        cut += 1
        for m in g.members:
            removal.setdefault((m.layer, m.param, m.axis), set()).update(g.indices(m, drop))
    subs = dict(model.named_sublayers(include_self=True))
    subs[""] = model
    for (layer, param, axis), idx in removal.items():
        sub = subs[layer]
        p = getattr(sub, param)
        arr = p.numpy()
        keep = [i for i in range(arr.shape[axis]) if i not in idx]
        new = np.take(arr, keep, axis=axis)
        newp = paddle.create_parameter(list(new.shape), str(arr.dtype), default_initializer=paddle.nn.initializer.Assign(new))
        newp.stop_gradient = p.stop_gradient
        setattr(sub, param, newp)
    for sub in subs.values():
        if isinstance(sub, (paddle.nn.Conv2D, paddle.nn.Conv1D, paddle.nn.Conv3D)) and sub._groups > 1:
            w = sub.weight
            if w.shape[1] == 1:  # depthwise: one group per channel
                mult = sub._out_channels // sub._in_channels
                sub._groups = w.shape[0] // mult
                sub._in_channels = sub._groups
                sub._out_channels = w.shape[0]
    return cut
