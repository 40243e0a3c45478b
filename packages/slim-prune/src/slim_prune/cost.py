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


def layer_flops(graph: Any) -> dict[str, float]:
    """FLOPs (slim_analysis definition) per layer of a traced :class:`~slim_core.graph.ModelGraph`.

    Ops that belong to no layer (activations, residual adds, pooling) are charged to the
    nearest layer upstream of them under the key ``"<layer>@out"``: their cost scales with
    that layer's output channels only.
    """
    from slim_analysis import node_flops

    out: dict[str, float] = {}
    for n in graph.nodes:
        f = float(node_flops(n))
        if not f:
            continue
        if n.layer is not None:
            out[n.layer] = out.get(n.layer, 0.0) + f
            continue
        key = ""
        v = next((i for i in n.inputs if i is not None), None)
        for _ in range(16):
            p = v.producer if v is not None else None
            if p is None:
                break
            if p.layer is not None:
                key = p.layer + "@out"
                break
            v = next((i for i in p.inputs if i is not None), None)
        out[key] = out.get(key, 0.0) + f
    return out


def param_count(model: Any) -> int:
    """Number of parameter elements (trainable or not, norm statistics included)."""
    return int(sum(_numel(p.shape) for p in model.parameters()))


def _axes_for(shape: Sequence[int], segs: dict[int, list[tuple[int, int, str]]], kind: str | None = None) -> list[Axis]:
    return [Axis(int(s), [(g, r) for g, r, k in segs.get(i, []) if kind is None or k == kind]) for i, s in enumerate(shape)]


def build_cost_models(model: Any, groups: Sequence[Any], flops: dict[str, float]) -> tuple[CostModel, CostModel]:
    """FLOPs and parameter cost models over the non-frozen ``groups``.

    Args:
        model: the Layer.
        groups: channel groups (frozen ones contribute no segments).
        flops: :func:`layer_flops` output (keys ``layer`` or ``layer@out``).
    """
    segs: dict[tuple[str, str], dict[int, list[tuple[int, int, str]]]] = {}
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
            segs.setdefault((m.layer, m.param), {}).setdefault(m.axis, []).append((g.id, max(int(m.repeat), 1), m.kind))
    sub = dict(model.named_sublayers(include_self=True))
    params: list[CostEntry] = []
    for qual, p in model.named_parameters():
        layer, _, attr = qual.rpartition(".")
        params.append(CostEntry(qual, float(_numel(p.shape)), _axes_for(list(p.shape), segs.get((layer, attr), {}))))
    fl: list[CostEntry] = []
    for key, cost in flops.items():
        name, _, out_only = key.partition("@")
        layer = sub.get(name)
        cands = [(n, p) for n, p in layer.named_parameters(include_sublayers=False) if p is not None] if layer is not None else []
        if not cands:
            fl.append(CostEntry(name, cost, []))
            continue
        attr, p = max(cands, key=lambda np_: (len(np_[1].shape), np_[0] == "weight"))
        # out_only: elementwise work on this layer's output scales with its output channels alone.
        axes = _axes_for(list(p.shape), segs.get((name, attr), {}), "out" if out_only else None)
        fl.append(CostEntry(key, cost, axes))
    return CostModel(fl, sizes), CostModel(params, sizes)
