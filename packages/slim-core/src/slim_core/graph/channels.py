"""Channel groups: which parameter slices must be pruned together.

Every tensor that carries channels gets a *layout*: its channel axis and, along
that axis, a sequence of segments ``(space, repeat)``. A *space* is a set of
channels born at one op (a conv or linear output, a model input); channel ``i``
of a segment sits at positions ``offset + i * repeat + j`` (``j < repeat``),
where ``offset`` is the sum of the previous segments' lengths. Op rules (see
:mod:`slim_core.graph.rules`) move layouts from inputs to outputs, tie spaces
together (residual adds), attach parameter slices (*members*) to spaces, and
freeze spaces they cannot map. A group is a set of tied spaces with all their
members.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from slim_core.errors import UnsupportedOpError
from slim_core.registry import Registry

if TYPE_CHECKING:
    from slim_core.graph.ir import ModelGraph, Node, ParamInfo, Value

__all__ = [
    "ChannelMember",
    "ChannelGroup",
    "Layout",
    "ChannelSolver",
    "CHANNEL_RULES",
    "register_channel_rule",
    "solve_channel_groups",
]

CHANNEL_RULES = Registry("channel rule")
"""``{op type: rule(node, solver)}``; a rule sets the layouts of the node's outputs."""


def register_channel_rule(*op_types: str, overwrite: bool = False) -> Any:
    """Decorator registering ``rule(node, solver)`` for one or more op types.

    Example:
        >>> @register_channel_rule("custom_op.my_act")          # doctest: +SKIP
        ... def my_act(node, s):
        ...     s.passthrough(node)
    """

    def deco(fn: Any) -> Any:
        for t in op_types:
            CHANNEL_RULES.register(t, overwrite=overwrite)(fn)
        return fn

    return deco


@dataclass(frozen=True)
class ChannelMember:
    """One parameter slice in a group.

    Group channel ``i`` maps to indices ``offset + i * repeat + j`` for ``j < repeat``
    along ``axis`` of parameter ``param`` of sublayer ``layer``.

    Attributes:
        layer: sublayer path (``"layer1.0.conv1"``); ``""`` for inference-model parameters.
        param: attribute name on the sublayer (``"weight"``, ``"_mean"``) or the program variable name.
        axis: parameter axis that carries the channel.
        offset: first index of the group's channels on that axis.
        repeat: how many consecutive indices one group channel covers.
        kind: ``"out"`` (the layer produces these channels) or ``"in"`` (it consumes them).
    """

    layer: str
    param: str
    axis: int
    offset: int = 0
    repeat: int = 1
    kind: Literal["out", "in"] = "out"

    @property
    def name(self) -> str:
        """Qualified parameter name (``"layer1.0.conv1.weight"``)."""
        return f"{self.layer}.{self.param}" if self.layer else self.param


@dataclass(frozen=True)
class ChannelGroup:
    """Coupled channels: pruning channel ``i`` of the group prunes it in every member.

    Attributes:
        id: index in :meth:`ModelGraph.channel_groups`.
        size: number of group channels.
        members: parameter slices that carry them.
        frozen: True when the group must not be pruned (see ``reason``).
        reason: why it is frozen (names the op or layer), else None.
        roles: ``"heads"`` when one group channel is one attention head (a reshape split the channels
            into ``(heads, head_dim)``), ``"head_dim"`` when the channels are the per-head width; a pruner
            must then also lower the owning layer's head count or head width.
    """

    id: int
    size: int
    members: tuple[ChannelMember, ...]
    frozen: bool
    reason: str | None
    roles: tuple[str, ...] = ()

    def indices(self, member: ChannelMember, channels: Any) -> list[int]:
        """Expand group channel indices into parameter indices along ``member.axis``.

        Example:
            >>> m = ChannelMember("fc", "weight", 0, offset=4, repeat=2, kind="in")
            >>> ChannelGroup(0, 3, (m,), False, None).indices(m, [0, 2])
            [4, 5, 8, 9]
        """
        out = []
        for c in channels:
            c = int(c)
            if not 0 <= c < self.size:
                raise IndexError(f"channel {c} out of range for group {self.id} of size {self.size}")
            base = member.offset + c * member.repeat
            out.extend(range(base, base + member.repeat))
        return out

    @property
    def layers(self) -> list[str]:
        """Distinct sublayer paths of the members, in order."""
        seen: list[str] = []
        for m in self.members:
            if m.layer not in seen:
                seen.append(m.layer)
        return seen

    def out_members(self) -> list[ChannelMember]:
        return [m for m in self.members if m.kind == "out"]

    def in_members(self) -> list[ChannelMember]:
        return [m for m in self.members if m.kind == "in"]


@dataclass(frozen=True)
class Layout:
    """Channel axis of a tensor and the segments ``(space, repeat)`` along it."""

    axis: int
    segs: tuple[tuple[int, int], ...]


class _Member:
    __slots__ = ("space", "layer", "param", "axis", "offset", "repeat", "kind")

    def __init__(self, space: int, layer: str, param: str, axis: int, offset: int, repeat: int, kind: str) -> None:
        self.space, self.layer, self.param, self.axis = space, layer, param, axis
        self.offset, self.repeat, self.kind = offset, repeat, kind


def default_axis(v: Value) -> int:
    """Guess the channel axis of a graph input or fresh tensor: 1 for NC* tensors of rank >= 4, else the last."""
    return 1 if v.rank >= 4 else max(v.rank - 1, 0)


class ChannelSolver:
    """Walks the graph once in program order, applying op rules, and collects groups.

    Rules use its helpers: :meth:`layout`, :meth:`set_layout`, :meth:`fresh`,
    :meth:`new_space`, :meth:`unify`, :meth:`freeze`, :meth:`add_member`,
    :meth:`param_member`, :meth:`passthrough`, :meth:`unsupported`.
    """

    def __init__(self, graph: ModelGraph, *, strict: bool = False) -> None:
        self.graph = graph
        self.strict = strict
        self.parent: list[int] = []
        self.size: list[int] = []
        self.reasons: dict[int, list[str]] = {}
        self.members: list[_Member] = []
        self.layouts: dict[int, Any] = {}
        self.frozen_params: dict[str, str] = {}
        self.node: Node | None = None
        self.splits: dict[int, list[int]] = {}
        self.roles: dict[int, set[str]] = {}

    # -- spaces --------------------------------------------------------------------
    def new_space(self, size: int, frozen: str | None = None) -> int:
        sid = len(self.parent)
        self.parent.append(sid)
        self.size.append(int(size))
        if frozen:
            self.reasons[sid] = [frozen]
        return sid

    def find(self, s: int) -> int:
        root = s
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[s] != root:
            self.parent[s], s = root, self.parent[s]
        return root

    def space_size(self, s: int) -> int:
        return self.size[self.find(s)]

    def freeze_space(self, s: int, reason: str) -> None:
        r = self.find(s)
        lst = self.reasons.setdefault(r, [])
        if reason not in lst:
            lst.append(reason)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] != self.size[rb]:
            why = f"{self._where()}: ties channel spaces of different sizes ({self.size[ra]} vs {self.size[rb]})"
            self.freeze_space(ra, why)
            self.freeze_space(rb, why)
            return
        lo, hi = min(ra, rb), max(ra, rb)
        self.parent[hi] = lo
        if hi in self.reasons:
            for why in self.reasons.pop(hi):
                self.freeze_space(lo, why)

    def coarsen(self, s: int, factor: int, *, heads: bool = False) -> None:
        """Make one channel of space ``s`` stand for ``factor`` consecutive old channels (attention heads)."""
        self.refresh_all()
        r = self.find(s)
        self.size[r] //= factor
        if heads:
            self.mark(r, "heads")
        for m in self.members:
            if self.find(m.space) == r:
                m.repeat *= factor
        for vid, lay in list(self.layouts.items()):
            if isinstance(lay, Layout):
                self.layouts[vid] = self._coarsen_layout(lay, r, factor)
            elif isinstance(lay, list):
                self.layouts[vid] = [self._coarsen_layout(x, r, factor) if isinstance(x, Layout) else x for x in lay]

    def split_space(self, s: int, sizes: list[int]) -> list[int]:
        """Cut the channels of space ``s`` (and of every space tied to it) into consecutive parts of ``sizes``.

        A refinement is always safe: members and layouts are rewritten part by part, and the parts of
        tied spaces stay tied. Returns the new spaces (one per part).
        """
        r = self.find(s)
        if sum(sizes) != self.size[r] or len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"cannot cut {self.size[r]} channels into {sizes}")
        cls = [x for x in range(len(self.parent)) if x not in self.splits and self.find(x) == r]
        parts_of = {x: [self.new_space(n) for n in sizes] for x in cls}
        self.splits.update(parts_of)
        base = parts_of[cls[0]]
        for x in cls[1:]:
            for a, b in zip(base, parts_of[x]):
                self.union(a, b)
        for p in base:
            for why in self.reasons.get(r, []):
                self.freeze_space(p, why)
            for role in self.roles.get(r, ()):
                self.mark(p, role)
        members = []
        for m in self.members:
            if m.space not in parts_of:
                members.append(m)
                continue
            off = m.offset
            for p, n in zip(parts_of[m.space], sizes):
                members.append(_Member(p, m.layer, m.param, m.axis, off, m.repeat, m.kind))
                off += n * m.repeat
        self.members = members
        self.refresh_all()
        return [self.find(p) for p in base]

    def mark(self, s: int, role: str) -> None:
        """Record that the channels of space ``s`` play ``role`` (``"heads"``, ``"head_dim"``)."""
        self.roles.setdefault(s, set()).add(role)

    def refresh(self, lay: Any) -> Any:
        """``lay`` with every segment of a space that was split replaced by its parts."""
        if isinstance(lay, list):
            return [self.refresh(x) for x in lay]
        if not isinstance(lay, Layout) or not any(sp in self.splits for sp, _ in lay.segs):
            return lay
        segs: list[tuple[int, int]] = []
        todo = list(lay.segs)
        while todo:
            sp, r = todo.pop(0)
            if sp in self.splits:
                todo[:0] = [(p, r) for p in self.splits[sp]]
            else:
                segs.append((sp, r))
        return Layout(lay.axis, tuple(segs))

    def refresh_all(self) -> None:
        if self.splits:
            for vid, lay in list(self.layouts.items()):
                self.layouts[vid] = self.refresh(lay)

    def boundaries(self, lay: Layout) -> set[int]:
        """Positions along the channel axis where a segment starts (0 excluded)."""
        return {off for _, _, off in self.offsets(lay)[1:]}

    def cut(self, lay: Layout, positions: Any) -> Layout | None:
        """Refine ``lay`` so that every position in ``positions`` starts a segment; None if one falls inside a repeat."""
        lay = self.refresh(lay)
        for p in sorted(set(positions)):
            for sp, r, off in self.offsets(lay):
                size = self.space_size(sp)
                if off < p < off + size * r:
                    if (p - off) % r:
                        return None
                    k = (p - off) // r
                    self.split_space(sp, [k, size - k])
                    lay = self.refresh(lay)
                    break
        return lay

    def _coarsen_layout(self, lay: Layout, r: int, factor: int) -> Layout:
        lay = self.refresh(lay)
        if not any(self.find(s) == r for s, _ in lay.segs):
            return lay
        return Layout(lay.axis, tuple((s, rep * factor if self.find(s) == r else rep) for s, rep in lay.segs))

    # -- layouts -------------------------------------------------------------------
    def layout(self, v: Value | None) -> Any:
        """The layout of ``v`` (a :class:`Layout`, a list for vector values, or None)."""
        if v is None:
            return None
        return self.refresh(self.layouts.get(v.id))

    def set_layout(self, v: Value, lay: Any) -> None:
        lay = self.refresh(lay)
        if isinstance(lay, Layout) and v.shape is not None:
            n = self.length(lay)
            if not (0 <= lay.axis < v.rank) or (v.shape[lay.axis] >= 0 and v.shape[lay.axis] != n):
                # a rule produced a layout that does not match the tensor: never guess, freeze
                self.freeze(lay, f"{self._where()}: channel layout does not match output shape {list(v.shape)}")
                self.fresh(v, f"{self._where()}: channel layout does not match output shape")
                return
        self.layouts[v.id] = lay

    def length(self, lay: Layout) -> int:
        return sum(self.space_size(s) * r for s, r in self.refresh(lay).segs)

    def offsets(self, lay: Layout) -> list[tuple[int, int, int]]:
        """``(space, repeat, offset)`` for each segment."""
        out, off = [], 0
        for s, r in self.refresh(lay).segs:
            out.append((s, r, off))
            off += self.space_size(s) * r
        return out

    def fresh(self, v: Value, frozen: str | None = None, axis: int | None = None) -> Layout | None:
        """Give ``v`` a new space along ``axis`` (default: :func:`default_axis`); None for non-float or scalar values."""
        if v.shape is None or v.rank == 0 or not v.is_float:
            return None
        ax = default_axis(v) if axis is None else axis
        n = v.shape[ax]
        if n < 0:
            n = 1
        lay = Layout(ax, ((self.new_space(n, frozen), 1),))
        self.layouts[v.id] = lay
        return lay

    def freeze(self, lay: Any, reason: str) -> None:
        """Freeze every space in ``lay`` (a Layout or a list of them)."""
        lay = self.refresh(lay)
        if isinstance(lay, Layout):
            for s, _ in lay.segs:
                self.freeze_space(s, reason)
        elif isinstance(lay, list):
            for x in lay:
                self.freeze(x, reason)

    def unify(self, a: Layout, b: Layout) -> bool:
        """Tie two layouts channel by channel (see :meth:`align`); freeze both when they cannot be aligned."""
        return self.align(a, b) is not None

    def align(self, a: Layout, b: Layout) -> Layout | None:
        """Tie two layouts channel by channel and return the tied layout (None, both frozen, if impossible).

        Layouts of the same length whose segments differ (a concat added to a plain tensor, as in
        GhostNet) are aligned first: spaces are cut where the other layout has a boundary, and where
        one channel of a side covers ``k`` positions the other side is coarsened by ``k``.
        """
        ok = self.length(a) == self.length(b)
        for _ in range(64):
            if not ok:
                break
            a, b = self.refresh(a), self.refresh(b)
            sa, sb = list(a.segs), list(b.segs)
            if len(sa) == len(sb) and all(ra == rb and self.space_size(x) == self.space_size(y) for (x, ra), (y, rb) in zip(sa, sb)):
                for (x, _), (y, _) in zip(sa, sb):
                    self.union(x, y)
                return self.refresh(a)
            ba, bb = self.boundaries(a), self.boundaries(b)
            if ba != bb:
                ok = self.cut(a, bb - ba) is not None and self.cut(b, ba - bb) is not None
                continue
            ok = False
            for (x, ra), (y, rb) in zip(sa, sb):
                if ra == rb:
                    continue
                (lo, rlo), (_, rhi) = sorted(((x, ra), (y, rb)), key=lambda t: t[1])
                factor = rhi // rlo
                if rhi % rlo == 0 and self.space_size(lo) % factor == 0:
                    root = self.find(lo)
                    self.coarsen(lo, factor)
                    a, b = self._coarsen_layout(a, root, factor), self._coarsen_layout(b, root, factor)
                    ok = True
                break
        why = f"{self._where()}: combines tensors whose channels are laid out differently"
        self.freeze(a, why)
        self.freeze(b, why)
        return None

    # -- members -------------------------------------------------------------------
    def param_info(self, v: Value | None) -> ParamInfo | None:
        """The parameter ``v`` is (directly, not a view), or None."""
        if v is None or v.param is None or v.producer is not None:
            return None
        return self.graph.params.get(v.param)

    def add_member(self, lay: Layout, info: ParamInfo, axis: int, kind: str, scale: int = 1) -> None:
        """Attach ``axis`` of parameter ``info`` to every segment of ``lay``."""
        for s, r, off in self.offsets(self.refresh(lay)):
            self.members.append(_Member(s, info.layer, info.attr, axis, off * scale, r * scale, kind))

    def param_member(self, v: Value, lay: Layout, size_axis_in_view: int, kind: str = "out") -> None:
        """Attach a parameter (or a reshaped view of one) that lines up with ``lay``'s channels."""
        info = self.graph.params.get(v.param or "")
        if info is None:
            self.freeze(lay, f"{self._where()}: parameter {v.param} is not known")
            return
        lay = self.refresh(lay)
        n = self.length(lay)
        if v.producer is None:
            self.add_member(lay, info, size_axis_in_view, kind)
            return
        big = [i for i, d in enumerate(info.shape) if d != 1]
        if len(big) == 1 and info.shape[big[0]] == n:
            self.add_member(lay, info, big[0], kind)
        else:
            self.freeze(lay, f"{self._where()}: parameter {info.name} of shape {list(info.shape)} is reshaped across channels")

    def freeze_param(self, name: str, reason: str) -> None:
        self.frozen_params.setdefault(name, reason)

    # -- generic rules ---------------------------------------------------------------
    def passthrough(self, node: Node, src: int = 0, outs: tuple[int, ...] = (0,)) -> None:
        """Outputs ``outs`` keep input ``src``'s channels (shape along the axis must be unchanged)."""
        x = node.inputs[src] if src < len(node.inputs) else None
        lay = self.layout(x)
        for i in outs:
            if i >= len(node.outputs):
                continue
            out = node.outputs[i]
            if not isinstance(lay, Layout):
                continue
            if out.shape is None or out.rank != x.rank or (out.shape[lay.axis] != x.shape[lay.axis]):
                self.freeze(lay, f"{self._where()}: changes the channel dimension")
                self.fresh(out, f"{self._where()}: changes the channel dimension")
                continue
            self.set_layout(out, lay)

    def unsupported(self, node: Node) -> None:
        """Freeze everything around an op without a rule (or raise in strict mode)."""
        where = f"op {node.type} (node #{node.index}{', layer ' + repr(node.layer) if node.layer else ''})"
        if self.strict:
            raise UnsupportedOpError(f"no channel rule for {where}; register one with slim_core.graph.register_channel_rule({node.type!r})")
        why = f"no channel rule for {where}"
        for v in node.inputs:
            self.freeze(self.layout(v), why)
            if v is not None and v.param is not None:
                self.freeze_param(v.param, why)
        for out in node.outputs:
            self.fresh(out, why)

    def _where(self) -> str:
        n = self.node
        if n is None:
            return "graph"
        return f"{n.type} (node #{n.index}{', layer ' + repr(n.layer) if n.layer else ''})"

    # -- driver ----------------------------------------------------------------------
    def run(self) -> list[ChannelGroup]:
        from slim_core.graph import rules  # noqa: F401  (registers the built-in rules)

        for node in self.graph.nodes:
            self.node = node
            rule = CHANNEL_RULES.get(node.type, None)
            if rule is None and node.type.endswith("_") and not node.type.endswith("__"):
                rule = CHANNEL_RULES.get(node.type[:-1], None)
            if rule is None:
                self.unsupported(node)
            else:
                rule(node, self)
        self.node = None
        for v in self.graph.outputs:
            self.freeze(self.layout(v), "model output")
        return self._groups()

    def _groups(self) -> list[ChannelGroup]:
        by_root: dict[int, list[_Member]] = {}
        order: list[int] = []
        for m in self.members:
            r = self.find(m.space)
            if r not in by_root:
                by_root[r] = []
                order.append(r)
            by_root[r].append(m)
        # a parameter slice reached twice (shared parameter) ties its groups
        seen: dict[tuple[str, str, int, int, int, int], int] = {}
        for r in order:
            for m in by_root[r]:
                key = (m.layer, m.param, m.axis, m.offset, m.repeat, self.size[r])
                if key in seen and self.find(seen[key]) != self.find(r):
                    self.union(seen[key], r)
                seen.setdefault(key, r)
        merged: dict[int, list[_Member]] = {}
        morder: list[int] = []
        for r in order:
            root = self.find(r)
            if root not in merged:
                merged[root] = []
                morder.append(root)
            merged[root].extend(by_root[r])
        # overlapping slices of one parameter axis in different groups cannot be pruned independently
        ranges: dict[tuple[str, str, int], list[tuple[int, int, int]]] = {}
        for root in morder:
            for m in merged[root]:
                ranges.setdefault((m.layer, m.param, m.axis), []).append((m.offset, m.offset + self.size[root] * m.repeat, root))
        for (layer, param, axis), rs in ranges.items():
            for i in range(len(rs)):
                for j in range(i + 1, len(rs)):
                    a, b = rs[i], rs[j]
                    if a[2] != b[2] and a[0] < b[1] and b[0] < a[1]:
                        why = f"parameter {layer + '.' if layer else ''}{param} axis {axis} is shared by differently coupled channels"
                        self.freeze_space(a[2], why)
                        self.freeze_space(b[2], why)
        groups: list[ChannelGroup] = []
        for root in morder:
            ms = merged[root]
            for m in ms:
                name = f"{m.layer}.{m.param}" if m.layer else m.param
                if name in self.frozen_params:
                    self.freeze_space(root, self.frozen_params[name])
            uniq: list[ChannelMember] = []
            keys = set()
            for m in ms:
                cm = ChannelMember(m.layer, m.param, m.axis, m.offset, m.repeat, m.kind)  # type: ignore[arg-type]
                k = (cm.layer, cm.param, cm.axis, cm.offset, cm.repeat)
                if k not in keys:
                    keys.add(k)
                    uniq.append(cm)
            reasons = self.reasons.get(root)
            groups.append(
                ChannelGroup(
                    id=len(groups),
                    size=self.size[root],
                    members=tuple(uniq),
                    frozen=bool(reasons),
                    reason="; ".join(reasons) if reasons else None,
                    roles=tuple(sorted({x for sp, rs in self.roles.items() if self.find(sp) == root for x in rs})),
                )
            )
        return groups


def solve_channel_groups(graph: ModelGraph, *, strict: bool = False) -> list[ChannelGroup]:
    """Compute the channel groups of ``graph`` (see :meth:`ModelGraph.channel_groups`)."""
    return ChannelSolver(graph, strict=strict).run()
