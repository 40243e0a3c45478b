"""Analytic FLOPs / parameter model of a network as a function of kept channels.

Each layer's cost (measured once by a forward pass) scales with the fraction of
channels kept on each axis of its main parameter; an axis may be fed by several
groups (a concat) plus a fixed, unpruned part. This lets the global ranking ask
"what would the FLOPs be if group g kept k channels?" in microseconds, without
touching the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slim_core import require_paddle

__all__ = ["Axis", "CostEntry", "CostModel", "layer_flops", "build_cost_models", "param_count"]


@dataclass
class Axis:
    """One parameter axis: ``size`` elements, of which ``segments`` ``(gid, repeat)`` are prunable."""

    size: int
    segments: list[tuple[int, int]] = field(default_factory=list)

    def kept(self, kept: dict[int, int], sizes: dict[int, int]) -> float:
        pruned_part = sum(sizes[g] * r for g, r in self.segments)
        return self.size - pruned_part + sum(kept[g] * r for g, r in self.segments)


@dataclass
class CostEntry:
    """``cost`` scaled by the kept fraction of each axis."""

    name: str
    cost: float
    axes: list[Axis]

    def value(self, kept: dict[int, int], sizes: dict[int, int]) -> float:
        v = self.cost
        for ax in self.axes:
            if ax.segments and ax.size:
                v *= ax.kept(kept, sizes) / ax.size
        return v

    def gids(self) -> set[int]:
        return {g for ax in self.axes for g, _ in ax.segments}


class CostModel:
    """Sum of :class:`CostEntry` values with fast per-group updates."""

    def __init__(self, entries: list[CostEntry], sizes: dict[int, int]) -> None:
        self.entries = entries
        self.sizes = dict(sizes)
        self.by_gid: dict[int, list[int]] = {}
        for i, e in enumerate(entries):
            for g in e.gids():
                self.by_gid.setdefault(g, []).append(i)

    @property
    def total(self) -> float:
        return float(sum(e.cost for e in self.entries))

    def value(self, kept: dict[int, int]) -> float:
        k = {**self.sizes, **kept}
        return float(sum(e.value(k, self.sizes) for e in self.entries))

    def entry_values(self, kept: dict[int, int]) -> list[float]:
        k = {**self.sizes, **kept}
        return [e.value(k, self.sizes) for e in self.entries]

    def delta(self, kept: dict[int, int], values: list[float], gid: int, new: int) -> tuple[float, dict[int, float]]:
        """Change of the total if group ``gid`` kept ``new`` channels; also the new entry values."""
        k = {**self.sizes, **kept, gid: new}
        changed = {i: self.entries[i].value(k, self.sizes) for i in self.by_gid.get(gid, [])}
        return sum(v - values[i] for i, v in changed.items()), changed

    def to_dict(self) -> dict[str, Any]:
        return {
            "sizes": {str(g): s for g, s in self.sizes.items()},
            "entries": [
                {"name": e.name, "cost": e.cost, "axes": [[a.size, [list(s) for s in a.segments]] for a in e.axes]} for e in self.entries
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CostModel:
        entries = [
            CostEntry(e["name"], float(e["cost"]), [Axis(int(a[0]), [(int(g), int(r)) for g, r in a[1]]) for a in e["axes"]])
            for e in data["entries"]
        ]
        return cls(entries, {int(g): int(s) for g, s in data["sizes"].items()})


def _numel(shape: Iterable[int]) -> int:
    return int(np.prod([max(int(s), 1) for s in shape])) if shape else 1


def layer_flops(model: Any, example_inputs: Sequence[Any]) -> dict[str, float]:
    """Multiply-accumulates per sample of each conv, linear and norm layer, from one forward pass.

    Conv: ``out_elems * in/groups * kernel``; transposed conv: ``in_elems * out/groups * kernel``;
    Linear: ``out_elems * in_features``; norms and PReLU: ``out_elems``.
    """
    paddle = require_paddle()
    nn = paddle.nn
    out: dict[str, float] = {}
    hooks = []
    names = {id(layer): name for name, layer in model.named_sublayers()}

    def hook(layer: Any, inputs: Any, output: Any) -> None:
        name = names.get(id(layer))
        x = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
        y = output[0] if isinstance(output, (tuple, list)) else output
        if name is None or not hasattr(y, "shape"):
            return
        batch = max(int(x.shape[0]), 1) if hasattr(x, "shape") and len(x.shape) > 1 else 1
        w = getattr(layer, "weight", None)
        if isinstance(layer, (nn.Conv1DTranspose, nn.Conv2DTranspose, nn.Conv3DTranspose)):
            per = _numel(w.shape[1:])
            flops = _numel(x.shape) * per / batch
        elif isinstance(layer, (nn.Conv1D, nn.Conv2D, nn.Conv3D)):
            flops = _numel(y.shape) * _numel(w.shape[1:]) / batch
        elif isinstance(layer, nn.Linear):
            flops = _numel(y.shape) * int(w.shape[0]) / batch
        else:
            flops = _numel(y.shape) / batch
        out[name] = out.get(name, 0.0) + float(flops)

    from slim_prune.layers import handler_for

    for name, layer in model.named_sublayers():
        if name and handler_for(layer, required=False) is not None and type(layer).__name__ != "MultiHeadAttention":
            hooks.append(layer.register_forward_post_hook(hook))
    was_training = bool(model.training)
    model.eval()  # a forward in train mode would move BN running statistics
    try:
        with paddle.no_grad():
            model(*example_inputs)
    finally:
        if was_training:
            model.train()
        for h in hooks:
            h.remove()
    return out


def param_count(model: Any) -> int:
    """Number of parameter elements (trainable or not, norm statistics included)."""
    return int(sum(_numel(p.shape) for p in model.parameters()))


def _axes_for(shape: Sequence[int], segs: dict[int, list[tuple[int, int]]]) -> list[Axis]:
    return [Axis(int(s), list(segs.get(i, []))) for i, s in enumerate(shape)]


def build_cost_models(model: Any, groups: Sequence[Any], flops: dict[str, float]) -> tuple[CostModel, CostModel]:
    """FLOPs and parameter cost models over the non-frozen ``groups``.

    Args:
        model: the Layer.
        groups: channel groups (frozen ones contribute no segments).
        flops: :func:`layer_flops` output.
    """
    segs: dict[tuple[str, str], dict[int, list[tuple[int, int]]]] = {}
    sizes = {}
    for g in groups:
        if g.frozen:
            continue
        sizes[g.id] = g.size
        seen = set()
        for m in g.members:
            key = (m.layer, m.param, m.axis, m.offset)
            if key in seen:
                continue
            seen.add(key)
            segs.setdefault((m.layer, m.param), {}).setdefault(m.axis, []).append((g.id, max(int(m.repeat), 1)))
    sub = dict(model.named_sublayers())
    params: list[CostEntry] = []
    for qual, p in model.named_parameters():
        layer, _, attr = qual.rpartition(".")
        params.append(CostEntry(qual, float(_numel(p.shape)), _axes_for(list(p.shape), segs.get((layer, attr), {}))))
    fl: list[CostEntry] = []
    for name, cost in flops.items():
        layer = sub.get(name)
        cands = [(n, p) for n, p in layer.named_parameters(include_sublayers=False) if p is not None] if layer is not None else []
        if not cands:
            fl.append(CostEntry(name, cost, []))
            continue
        attr, p = max(cands, key=lambda np_: (len(np_[1].shape), np_[0] == "weight"))
        axes = _axes_for(list(p.shape), segs.get((name, attr), {}))
        # Depthwise convs: weight [C, 1, k, k] with groups=C; cost is linear in C (axis 0).
        fl.append(CostEntry(name, cost, axes))
    return CostModel(fl, sizes), CostModel(params, sizes)
