"""Built-in channel-flow rules for Paddle PIR ops.

Each rule reads its inputs' layouts from the solver and sets its outputs'
layouts (see :mod:`slim_core.graph.channels`). Add your own with
:func:`~slim_core.graph.channels.register_channel_rule`.
"""

from __future__ import annotations

import math
from typing import Any

from slim_core.graph.channels import ChannelSolver, Layout, register_channel_rule
from slim_core.graph.ir import Node, Value

__all__ = ["const_value", "PASSTHROUGH_OPS", "ELEMENTWISE_OPS", "RESHAPE_OPS"]

PASSTHROUGH_OPS = (
    "pd_op.relu",
    "pd_op.relu6",
    "pd_op.hardswish",
    "pd_op.hardsigmoid",
    "pd_op.swish",
    "pd_op.silu",
    "pd_op.sigmoid",
    "pd_op.tanh",
    "pd_op.gelu",
    "pd_op.leaky_relu",
    "pd_op.elu",
    "pd_op.selu",
    "pd_op.celu",
    "pd_op.softplus",
    "pd_op.softsign",
    "pd_op.mish",
    "pd_op.hardtanh",
    "pd_op.hard_swish",
    "pd_op.logsigmoid",
    "pd_op.exp",
    "pd_op.log",
    "pd_op.sqrt",
    "pd_op.rsqrt",
    "pd_op.square",
    "pd_op.abs",
    "pd_op.pow",
    "pd_op.scale",
    "pd_op.cast",
    "pd_op.clip",
    "pd_op.assign",
    "pd_op.dropout",
    "pd_op.softmax",
    "pd_op.log_softmax",
    "pd_op.pool2d",
    "pd_op.pool3d",
    "pd_op.max_pool2d_with_index",
    "pd_op.bilinear_interp",
    "pd_op.nearest_interp",
    "pd_op.bicubic_interp",
    "pd_op.linear_interp",
    "pd_op.trilinear_interp",
    "pd_op.pad3d",
    "pd_op.contiguous",
    "pd_op.share_data",
    "pd_op.memcpy_h2d",
)
ELEMENTWISE_OPS = (
    "pd_op.add",
    "pd_op.subtract",
    "pd_op.multiply",
    "pd_op.divide",
    "pd_op.maximum",
    "pd_op.minimum",
    "pd_op.elementwise_pow",
    "pd_op.remainder",
    "pd_op.floor_divide",
)
RESHAPE_OPS = ("pd_op.reshape", "pd_op.flatten", "pd_op.squeeze", "pd_op.unsqueeze", "pd_op.view_shape")
_NO_CHANNEL_OPS = (
    "pd_op.full_int_array",
    "pd_op.shape",
    "pd_op.shape64",
    "pd_op.full",
    "pd_op.full_like",
    "pd_op.assign_value",
    "pd_op.assign_value_",
    "pd_op.arange",
    "pd_op.full_with_tensor",
    "pd_op.zeros_like",
    "pd_op.ones_like",
)


def const_value(v: Value | None) -> Any:
    """The compile-time value of ``v`` when it comes from a ``full`` / ``full_int_array`` op, else None."""
    if v is None or v.producer is None:
        return None
    p = v.producer
    if p.type in ("pd_op.full", "pd_op.full_int_array", "pd_op.assign_value_", "pd_op.assign_value"):
        val = p.attrs.get("value", p.attrs.get("values"))
        return val
    return None


def _int_list(v: Any) -> list[int] | None:
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        try:
            return [int(x) for x in v]
        except (TypeError, ValueError):
            return None
    try:
        return [int(v)]
    except (TypeError, ValueError):
        return None


@register_channel_rule(*PASSTHROUGH_OPS)
def _passthrough(node: Node, s: ChannelSolver) -> None:
    s.passthrough(node)


@register_channel_rule(*_NO_CHANNEL_OPS)
def _constant(node: Node, s: ChannelSolver) -> None:
    for out in node.outputs:
        if out.is_float and out.numel > 1:
            s.fresh(out, f"constant tensor from {node.type} (node #{node.index})")


@register_channel_rule("pd_op.data", "pd_op.feed")
def _data(node: Node, s: ChannelSolver) -> None:
    s.fresh(node.outputs[0], f"model input {node.outputs[0].name or ''}".strip())


@register_channel_rule("pd_op.fetch")
def _fetch(node: Node, s: ChannelSolver) -> None:
    s.freeze(s.layout(node.inputs[0]), "model output")


@register_channel_rule(*ELEMENTWISE_OPS)
def _elementwise(node: Node, s: ChannelSolver) -> None:
    out = node.outputs[0]
    ro = out.rank
    carriers: list[tuple[Value, Layout, int]] = []
    for v in node.inputs[:2]:
        lay = s.layout(v)
        if v is None or not isinstance(lay, Layout):
            continue
        if v.shape[lay.axis] == 1 and (out.shape[lay.axis + ro - v.rank] != 1):
            continue  # broadcast along the channel axis: this operand carries no channels
        carriers.append((v, lay, lay.axis + ro - v.rank))
    if not carriers:
        if any(v is not None and v.param is not None for v in node.inputs[:2]) and out.numel > 1:
            s.fresh(out, f"{s._where()}: computed from parameters only")
        return
    _, lay0, oax = carriers[0]
    for _v, lay, ax in carriers[1:]:
        if ax == oax:
            s.unify(lay0, lay)
        else:
            why = f"{s._where()}: combines tensors with channels on different axes"
            s.freeze(lay0, why)
            s.freeze(lay, why)
    carried = {id(v) for v, _, _ in carriers}
    for v in node.inputs[:2]:
        if v is None or id(v) in carried or v.shape is None or v.rank == 0:
            continue
        vax = oax - (ro - v.rank)
        if vax < 0 or v.shape[vax] == 1:
            continue  # broadcast: no per-channel values
        if v.param is not None:
            s.param_member(v, lay0, vax, "out")
        else:
            src = v.producer.type if v.producer else "input"
            s.freeze(lay0, f"{s._where()}: per-channel operand from {src} has no channel mapping")
    s.set_layout(out, Layout(oax, lay0.segs))


def _conv_common(node: Node, s: ChannelSolver, *, transpose: bool) -> None:
    x = node.inputs[0]
    w = node.inputs[1] if len(node.inputs) > 1 else None
    out = node.outputs[0]
    fmt = str(node.attrs.get("data_format", "NCHW"))
    cax = 1 if fmt.startswith("NC") else x.rank - 1
    groups = int(node.attrs.get("groups", 1) or 1)
    info = s.param_info(w)
    lay = s.layout(x)
    if not isinstance(lay, Layout):
        lay = s.fresh(x, f"{s._where()}: input has no channel layout")
    elif lay.axis != cax:
        s.freeze(lay, f"{s._where()}: input channels are on axis {lay.axis}, the conv reads axis {cax}")
    if info is None:
        why = f"{s._where()}: the filter is not a parameter"
        s.freeze(lay, why)
        s.fresh(out, why, axis=cax)
        return
    cin = x.shape[cax]
    cout = out.shape[cax]
    in_axis, out_axis = (0, 1) if transpose else (1, 0)
    if groups == 1:
        s.add_member(lay, info, in_axis, "in")
        new = s.fresh(out, axis=cax)
        if new is not None:
            s.add_member(new, info, out_axis, "out")
        return
    if not transpose and groups == cin and info.shape[1] == 1 and cout % cin == 0:
        mult = cout // cin
        new = Layout(cax, tuple((sp, r * mult) for sp, r in lay.segs))
        s.add_member(lay, info, 0, "out", scale=mult)
        s.set_layout(out, new)
        return
    # grouped conv: each output group reads its own input slice; we do not map that, so freeze both sides
    why = f"grouped conv (groups={groups}) at {s._where()}"
    s.freeze(lay, why)
    new = s.fresh(out, why, axis=cax)
    if new is not None:
        s.add_member(new, info, out_axis, "out")


@register_channel_rule("pd_op.conv2d", "pd_op.conv3d", "pd_op.conv1d", "pd_op.depthwise_conv2d")
def _conv(node: Node, s: ChannelSolver) -> None:
    _conv_common(node, s, transpose=False)


@register_channel_rule("pd_op.conv2d_transpose", "pd_op.conv3d_transpose", "pd_op.depthwise_conv2d_transpose")
def _conv_t(node: Node, s: ChannelSolver) -> None:
    _conv_common(node, s, transpose=True)


@register_channel_rule("pd_op.matmul")
def _matmul(node: Node, s: ChannelSolver) -> None:
    x, y = node.inputs[0], node.inputs[1]
    out = node.outputs[0]
    tx, ty = bool(node.attrs.get("transpose_x", False)), bool(node.attrs.get("transpose_y", False))
    winfo = s.param_info(y)
    lx = s.layout(x)
    if winfo is not None and len(winfo.shape) == 2 and not tx:
        in_axis, out_axis = (1, 0) if ty else (0, 1)
        if not isinstance(lx, Layout):
            lx = s.fresh(x, f"{s._where()}: input has no channel layout", axis=x.rank - 1)
        elif lx.axis != x.rank - 1:
            s.freeze(lx, f"{s._where()}: input channels are on axis {lx.axis}, the matmul contracts the last axis")
        if lx is not None:
            s.add_member(lx, winfo, in_axis, "in")
        new = s.fresh(out, axis=out.rank - 1)
        if new is not None:
            s.add_member(new, winfo, out_axis, "out")
        return
    ly = s.layout(y)
    # two activations (attention): channels on batch axes are tied; channels on the contracted
    # axes of both sides (a head_dim of q and k) are tied and summed away; row/column channels pass
    if x is not None and y is not None and x.rank >= 2 and y.rank >= 2 and out.rank >= 2:
        ro = out.rank
        kx, rowx = (x.rank - 2, x.rank - 1) if tx else (x.rank - 1, x.rank - 2)
        ky, coly = (y.rank - 1, y.rank - 2) if ty else (y.rank - 2, y.rank - 1)

        def role(lay: Any, rank: int, k: int, keep: int, keep_out: int) -> Any:
            if not isinstance(lay, Layout):
                return None
            if lay.axis == k:
                return "contract"
            if lay.axis == keep:
                return keep_out
            return lay.axis + ro - rank

        rx_ = role(lx, x.rank, kx, rowx, ro - 2)
        ry_ = role(ly, y.rank, ky, coly, ro - 1)
        why = f"{s._where()}: contracts channels against a tensor that does not carry them"
        if rx_ == "contract" and ry_ == "contract":
            if s.align(lx, ly) is None:
                s.fresh(out, f"{s._where()}: contracted channels do not line up")
            return
        keep: list[tuple[Layout, int]] = []
        for lay, r in ((lx, rx_), (ly, ry_)):
            if r == "contract":
                s.freeze(lay, why)
            elif r is not None:
                keep.append((lay, r))
        if not keep:
            if any(r == "contract" for r in (rx_, ry_)):
                s.fresh(out, why)
            return
        lay0, ax0 = keep[0]
        if len(keep) == 2:
            if keep[1][1] == ax0:
                lay0 = s.align(lay0, keep[1][0]) or lay0
            else:
                s.freeze(keep[1][0], f"{s._where()}: the output would carry channels on two axes")
        s.set_layout(out, Layout(ax0, s.refresh(lay0).segs))
        return
    why = f"{s._where()}: matmul between tensors contracts their channels"
    for v, lay in ((x, lx), (y, ly)):
        s.freeze(lay, why)
        if v is not None and v.param is not None:
            s.freeze_param(v.param, why)
    s.fresh(out, why)


def _norm_members(node: Node, s: ChannelSolver, lay: Layout, roles: tuple[str, ...]) -> None:
    for role in roles:
        v = node.input(role)
        if v is not None and v.param is not None:
            info = s.param_info(v)
            if info is not None and len(info.shape) == 1 and info.shape[0] == s.length(lay):
                s.add_member(lay, info, 0, "out")
            else:
                s.freeze(lay, f"{s._where()}: {role} parameter does not line up with the channels")


@register_channel_rule("pd_op.batch_norm", "pd_op.sync_batch_norm", "pd_op.instance_norm")
def _batch_norm(node: Node, s: ChannelSolver) -> None:
    x = node.inputs[0]
    lay = s.layout(x)
    if not isinstance(lay, Layout):
        return
    fmt = str(node.attrs.get("data_format", node.attrs.get("data_layout", "NCHW")))
    cax = 1 if fmt.startswith("NC") else x.rank - 1
    if lay.axis != cax:
        s.freeze(lay, f"{s._where()}: normalizes axis {cax} but the channels are on axis {lay.axis}")
    _norm_members(node, s, lay, ("scale", "bias", "mean", "variance"))
    s.set_layout(node.outputs[0], lay)


@register_channel_rule("pd_op.layer_norm")
def _layer_norm(node: Node, s: ChannelSolver) -> None:
    x = node.inputs[0]
    lay = s.layout(x)
    if not isinstance(lay, Layout):
        return
    begin = int(node.attrs.get("begin_norm_axis", x.rank - 1))
    if begin < 0:
        begin += x.rank
    if lay.axis < begin:
        pass  # the normalized dims do not include the channels; scale/bias do not change
    elif lay.axis == x.rank - 1 and begin == x.rank - 1:
        _norm_members(node, s, lay, ("scale", "bias"))
    else:
        s.freeze(lay, f"{s._where()}: normalizes the channels together with other axes")
    s.set_layout(node.outputs[0], lay)


@register_channel_rule("pd_op.group_norm")
def _group_norm(node: Node, s: ChannelSolver) -> None:
    lay = s.layout(node.inputs[0])
    if not isinstance(lay, Layout):
        return
    s.freeze(lay, f"{s._where()}: group_norm couples channels in groups")
    _norm_members(node, s, lay, ("scale", "bias"))
    s.set_layout(node.outputs[0], lay)


@register_channel_rule("pd_op.prelu")
def _prelu(node: Node, s: ChannelSolver) -> None:
    lay = s.layout(node.inputs[0])
    a = node.inputs[1] if len(node.inputs) > 1 else None
    if isinstance(lay, Layout) and a is not None and a.param is not None and a.numel > 1:
        info = s.param_info(a)
        if info is not None and max(info.shape) == s.length(lay) and a.numel == s.length(lay):
            s.add_member(lay, info, info.shape.index(max(info.shape)), "out")
        else:
            s.freeze(lay, f"{s._where()}: prelu alpha does not line up with the channels")
    s.passthrough(node)


@register_channel_rule("pd_op.embedding")
def _embedding(node: Node, s: ChannelSolver) -> None:
    w = node.inputs[1] if len(node.inputs) > 1 else None
    info = s.param_info(w)
    out = node.outputs[0]
    if info is None:
        s.fresh(out, f"{s._where()}: the table is not a parameter")
        return
    new = s.fresh(out, axis=out.rank - 1)
    if new is not None:
        s.add_member(new, info, 1, "out")


@register_channel_rule("builtin.combine")
def _combine(node: Node, s: ChannelSolver) -> None:
    s.layouts[node.outputs[0].id] = [s.layout(v) for v in node.inputs]


@register_channel_rule("builtin.split")
def _bsplit(node: Node, s: ChannelSolver) -> None:
    lays = s.layout(node.inputs[0])
    for i, out in enumerate(node.outputs):
        lay = lays[i] if isinstance(lays, list) and i < len(lays) else None
        if isinstance(lay, Layout):
            s.set_layout(out, lay)


@register_channel_rule("pd_op.concat")
def _concat(node: Node, s: ChannelSolver) -> None:
    lays = s.layout(node.inputs[0])
    parts = node.inputs[0].producer.inputs if node.inputs[0].producer is not None else []
    out = node.outputs[0]
    axis = _int_list(const_value(node.inputs[1]) if len(node.inputs) > 1 else None)
    if not isinstance(lays, list) or axis is None or len(lays) != len(parts):
        s.freeze(lays, f"{s._where()}: concat axis is not a constant")
        s.fresh(out, f"{s._where()}: concat axis is not a constant")
        return
    ax = axis[0] % out.rank
    real = [(v, lay) for v, lay in zip(parts, lays)]
    carried = [lay for _, lay in real if isinstance(lay, Layout)]
    if carried and all(lay.axis == carried[0].axis != ax for lay in carried):
        # tokens concatenated (a class token before the patches): parameters broadcast along
        # the new axis carry the same channels
        params = [(v, _param_source(v)) for v, lay in real if not isinstance(lay, Layout)]
        if all(src is not None for _, src in params):
            lay0 = carried[0]
            for other in carried[1:]:
                s.unify(lay0, other)
            for _v, (pv, shift) in params:  # type: ignore[misc]
                pax = lay0.axis - shift
                if 0 <= pax < pv.rank and pv.shape[pax] == s.length(lay0):
                    s.param_member(pv, lay0, pax, "out")
                else:
                    s.freeze(lay0, f"{s._where()}: concatenated parameter does not line up with the channels")
            s.set_layout(out, lay0)
            return
    if any(not isinstance(lay, Layout) for _, lay in real):
        why = f"{s._where()}: concatenates a tensor without channel layout"
        s.freeze(lays, why)
        s.fresh(out, why, axis=ax)
        return
    if all(lay.axis == ax for _, lay in real):
        s.set_layout(out, Layout(ax, tuple(seg for _, lay in real for seg in lay.segs)))
        return
    lay0 = real[0][1]
    if all(lay.axis == lay0.axis for _, lay in real):
        for _, lay in real[1:]:
            s.unify(lay0, lay)
        s.set_layout(out, lay0)
        return
    why = f"{s._where()}: concatenates tensors with channels on different axes"
    s.freeze(lays, why)
    s.fresh(out, why)


@register_channel_rule("pd_op.split", "pd_op.split_with_num")
def _split(node: Node, s: ChannelSolver) -> None:
    x = node.inputs[0]
    lay = s.layout(x)
    out = node.outputs[0]
    if not isinstance(lay, Layout):
        return
    axis = _int_list(const_value(node.inputs[-1]))
    if node.type == "pd_op.split_with_num":
        num = int(node.attrs.get("num", 0))
        total = x.shape[axis[0] % x.rank] if axis else -1
        sections = [total // num] * num if num and total > 0 else None
    else:
        sections = _int_list(const_value(node.inputs[1]))
    if axis is None or sections is None:
        s.freeze(lay, f"{s._where()}: split sections or axis are not constants")
        return
    ax = axis[0] % x.rank
    if -1 in sections:
        known = sum(v for v in sections if v != -1)
        sections = [x.shape[ax] - known if v == -1 else v for v in sections]
    if ax != lay.axis:
        s.layouts[out.id] = [lay for _ in sections]
        return
    parts = _cut_sections(s, lay, sections)
    if parts is None:
        why = f"{s._where()}: splits a channel block at {sections} inside a repeated channel"
        s.freeze(lay, why)
        parts = [Layout(lay.axis, ((s.new_space(n, why), 1),)) for n in sections]
    elif len(set(sections)) > 1:
        # unequal constant sections: pruning would move the cut unless the code recomputes it
        s.freeze(lay, f"{s._where()}: splits the channels at fixed unequal sections {sections}")
    else:
        # equal sections are computed from the width at run time (x.shape[1] // n): every part
        # must lose the same number of channels, so the parts are tied channel by channel
        for p in parts[1:]:
            s.unify(parts[0], p)
        parts = [s.refresh(p) for p in parts]
    s.layouts[out.id] = parts


def _cut_sections(s: ChannelSolver, lay: Layout, sizes: list[int]) -> list[Layout] | None:
    """Cut ``lay`` into consecutive sections (cutting spaces where needed); None when a cut falls inside a repeat."""
    pos, bounds = 0, []
    for n in sizes[:-1]:
        pos += n
        bounds.append(pos)
    lay = s.cut(lay, bounds)
    if lay is None:
        return None
    out, start, segs = [], 0, s.offsets(lay)
    for n in sizes:
        part = [(sp, r) for sp, r, off in segs if start <= off < start + n]
        out.append(Layout(lay.axis, tuple(part)))
        start += n
    return out


@register_channel_rule("pd_op.slice", "pd_op.strided_slice")
def _slice(node: Node, s: ChannelSolver) -> None:
    x, out = node.inputs[0], node.outputs[0]
    lay = s.layout(x)
    if not isinstance(lay, Layout):
        return
    axes = [int(a) % x.rank for a in (node.attrs.get("axes") or [])]
    dec = sorted(int(a) % x.rank for a in (node.attrs.get("decrease_axis") or []))
    if lay.axis in axes:
        i = axes.index(lay.axis)
        starts = _int_list(const_value(node.inputs[1])) if len(node.inputs) > 1 else None
        ends = _int_list(const_value(node.inputs[2])) if len(node.inputs) > 2 else None
        strides = _int_list(const_value(node.inputs[3])) if node.type == "pd_op.strided_slice" and len(node.inputs) > 3 else [1]
        n = x.shape[lay.axis]
        full = (
            starts is not None
            and ends is not None
            and (strides or [1])[min(i, len(strides or [1]) - 1)] == 1
            and starts[i] in (0, -n)
            and ends[i] >= n
            and lay.axis not in dec
        )
        if not full:
            why = f"{s._where()}: slices the channel axis with fixed bounds"
            s.freeze(lay, why)
            s.fresh(out, why)
            return
    new_axis = lay.axis - sum(1 for d in dec if d < lay.axis)
    if out.shape is not None and out.rank == x.rank - len(dec):
        s.set_layout(out, Layout(new_axis, lay.segs))
    else:
        why = f"{s._where()}: output rank does not follow the decreased axes"
        s.freeze(lay, why)
        s.fresh(out, why)


@register_channel_rule("pd_op.expand", "pd_op.expand_as", "pd_op.broadcast_to", "pd_op.tile")
def _expand(node: Node, s: ChannelSolver) -> None:
    x, out = node.inputs[0], node.outputs[0]
    lay = s.layout(x)
    if not isinstance(lay, Layout):
        return  # a parameter broadcast (a class token): consumers attach it through _param_source
    ax = lay.axis + out.rank - x.rank
    if out.shape is None or out.shape[ax] != x.shape[lay.axis]:
        why = f"{s._where()}: repeats the channel axis"
        s.freeze(lay, why)
        s.fresh(out, why)
        return
    s.set_layout(out, Layout(ax, lay.segs))


_PARAM_BROADCAST_OPS = ("pd_op.expand", "pd_op.expand_as", "pd_op.broadcast_to", "pd_op.tile", "pd_op.cast", "pd_op.assign")


def _param_source(v: Value | None) -> tuple[Value, int] | None:
    """``(parameter value, rank offset)`` when ``v`` is a parameter broadcast by expand/tile (a class token)."""
    shift = 0
    while v is not None and v.producer is not None and v.producer.type in _PARAM_BROADCAST_OPS:
        src = v.producer.inputs[0]
        if src is None:
            return None
        shift += v.rank - src.rank
        v = src
    if v is None or v.param is None or v.producer is not None:
        return None
    return v, shift


@register_channel_rule("pd_op.transpose")
def _transpose(node: Node, s: ChannelSolver) -> None:
    lay = s.layout(node.inputs[0])
    if not isinstance(lay, Layout):
        return
    perm = [int(p) % node.inputs[0].rank for p in node.attrs.get("perm", [])]
    if lay.axis not in perm:
        s.freeze(lay, f"{s._where()}: transpose without permutation")
        s.fresh(node.outputs[0], f"{s._where()}: transpose without permutation")
        return
    s.set_layout(node.outputs[0], Layout(perm.index(lay.axis), lay.segs))


def _prod(xs: Any) -> int:
    return int(math.prod(int(d) for d in xs))


def _unmerge(s: ChannelSolver, lay: Layout, inner: int, *, allow_coarsen: bool) -> Layout | None:
    """The layout on the outer axis when the channel axis is split into ``(outer, inner)``.

    Segments whose repeat is a multiple of ``inner`` just shrink their repeat (undoing an earlier
    merge); otherwise, with ``allow_coarsen``, one channel becomes ``inner`` consecutive positions
    (one attention head). None when a segment does not line up with ``inner``.
    """
    new = []
    for sp, rep, off in s.offsets(lay):
        length = s.space_size(sp) * rep
        if off % inner or length % inner:
            return None
        if rep % inner == 0:
            new.append((sp, rep // inner))
        elif allow_coarsen and inner % rep == 0 and s.space_size(sp) % (inner // rep) == 0:
            new.append((sp, -(inner // rep)))  # coarsened below, once every segment is known to fit
        else:
            return None
    segs, done = [], set()
    for sp, rep in new:
        if rep < 0:
            if s.find(sp) not in done:
                s.coarsen(sp, -rep, heads=True)
                done.add(s.find(sp))
            rep = 1
        segs.append((sp, rep))
    return s.refresh(Layout(lay.axis, tuple(segs)))


def _tile(s: ChannelSolver, lay: Layout, outer: int) -> Layout | None:
    """Channels split into ``(outer, rest)`` with the rest carrying them (a ``[3, heads, head_dim]`` qkv
    reshape, a channel shuffle): the ``outer`` chunks are cut apart and tied, the layout of chunk 0 is returned."""
    n = s.length(lay)
    step = n // outer
    parts = _cut_sections(s, lay, [step] * outer)
    if parts is None:
        return None
    first = parts[0]
    for p in parts[1:]:
        first = s.align(first, p)
        if first is None:
            return None
    return s.refresh(first)


@register_channel_rule("pd_op.channel_shuffle")
def _channel_shuffle(node: Node, s: ChannelSolver) -> None:
    """``F.channel_shuffle(x, g)``: the g chunks are tied channel by channel, then interleaved (``repeat=g``)."""
    x, out = node.inputs[0], node.outputs[0]
    lay = s.layout(x)
    if not isinstance(lay, Layout):
        return
    groups = int(node.attrs.get("groups", 1) or 1)
    fmt = str(node.attrs.get("data_format", "NCHW"))
    cax = 1 if fmt.startswith("NC") else x.rank - 1
    chunk = _tile(s, lay, groups) if lay.axis == cax and s.length(lay) % groups == 0 else None
    if chunk is None:
        why = f"{s._where()}: channel_shuffle over channels that do not split into {groups} equal groups"
        s.freeze(lay, why)
        s.fresh(out, why, axis=cax)
        return
    s.set_layout(out, Layout(cax, tuple((sp, rep * groups) for sp, rep in chunk.segs)))


@register_channel_rule(*RESHAPE_OPS)
def _reshape(node: Node, s: ChannelSolver) -> None:
    x, out = node.inputs[0], node.outputs[0]
    lay = s.layout(x)
    if not isinstance(lay, Layout):
        return
    ishape, oshape = list(x.shape), list(out.shape)
    if ishape and oshape and ishape[0] == -1 and oshape[0] == -1:
        ishape[0] = oshape[0] = 1
    if any(d < 0 for d in ishape + oshape):
        why = f"{s._where()}: reshape with unknown dims {list(x.shape)} -> {list(out.shape)}"
        s.freeze(lay, why)
        s.fresh(out, why)
        return
    a = lay.axis
    c = ishape[a]
    before = _prod(ishape[:a])
    # the output axis where the channel dim starts: the last j with prod(oshape[:j]) == before
    j0 = None
    for j in range(len(oshape) + 1):
        if _prod(oshape[:j]) == before and (j == len(oshape) or oshape[j] != 1 or c == 1):
            j0 = j
            if j < len(oshape) and oshape[j] != 1:
                break
    why_mix = f"{s._where()}: reshape {list(x.shape)} -> {list(out.shape)} mixes the channel axis with others"
    if j0 is None or j0 >= len(oshape):
        s.freeze(lay, why_mix)
        s.fresh(out, why_mix)
        return
    # smallest matching block: input dims [a, e) and output dims [j0, f)
    e, f = a + 1, j0 + 1
    pi, po = ishape[a], oshape[j0]
    while pi != po:
        if pi < po and e < len(ishape):
            pi *= ishape[e]
            e += 1
        elif po < pi and f < len(oshape):
            po *= oshape[f]
            f += 1
        else:
            break
    if pi != po:
        s.freeze(lay, why_mix)
        s.fresh(out, why_mix)
        return
    target = _int_list(const_value(node.inputs[1])) if node.type == "pd_op.reshape" and len(node.inputs) > 1 else None
    if target is not None and len(target) == len(oshape) and target[j0] not in (-1, 0) and oshape[j0] == c:
        inferred = [i for i, t in enumerate(target) if t == -1 and not j0 <= i < f]
        if inferred:
            # reshape([B, C, -1]), reshape([-1, 2048]): a fixed channel count next to an inferred dim
            # would silently re-cut the data after pruning instead of failing
            why = f"{s._where()}: reshape to the fixed shape {target} hard-codes {target[j0]} channels next to an inferred dim"
            s.freeze(lay, why)
            s.fresh(out, why)
            return
    # Reshape targets are taken to be computed from the tensor's shape or the layer's attributes
    # (x.shape[1] // groups, self.num_heads); a hard-coded count fails the pruner's trial forward.
    j, cur, cc = j0, lay, c
    role = None
    while oshape[j] != cc:
        outer = oshape[j]
        if outer == 1 and j + 1 < f:
            j += 1  # a single head or group: the channels stay on the next axis
            role = "head_dim" if f == len(oshape) else None
            continue
        if outer > cc and outer % cc == 0 and j == j0:
            # channel merged with the following dims: each channel now covers outer/cc positions
            r = outer // cc
            if _prod(ishape[a + 1 : e]) % r:
                cur = None
                break
            cur = Layout(j, tuple((sp, rep * r) for sp, rep in cur.segs))
            cc = outer
            break
        if cc % outer:
            cur = None
            break
        inner = cc // outer
        at_end = j + 2 == f and f == len(oshape)
        nxt = _unmerge(s, cur, inner, allow_coarsen=False)
        if nxt is None and at_end:
            nxt = _unmerge(s, cur, inner, allow_coarsen=True)  # (heads, head_dim): one channel per head
        if nxt is not None:
            cur, cc = nxt, outer
            break
        nxt = _tile(s, cur, outer)  # (chunks, ...): q/k/v or shuffle groups, tied chunk by chunk
        if nxt is None:
            cur = None
            break
        cur, cc, j = nxt, inner, j + 1
    if cur is None:
        s.freeze(lay, why_mix)
        s.fresh(out, why_mix)
        return
    if role is not None:
        for sp, _ in s.refresh(cur).segs:
            s.mark(sp, role)
    s.set_layout(out, Layout(j, s.refresh(cur).segs))


@register_channel_rule("pd_op.mean", "pd_op.sum", "pd_op.max", "pd_op.min", "pd_op.prod", "pd_op.amax", "pd_op.amin", "pd_op.logsumexp")
def _reduce(node: Node, s: ChannelSolver) -> None:
    x, out = node.inputs[0], node.outputs[0]
    lay = s.layout(x)
    if not isinstance(lay, Layout):
        return
    axes = node.attrs.get("axis")
    if axes is None and len(node.inputs) > 1:
        axes = const_value(node.inputs[1])
    axes_l = _int_list(axes)
    keep = bool(node.attrs.get("keepdim", node.attrs.get("keep_dim", False)))
    if axes_l is None:
        s.freeze(lay, f"{s._where()}: reduce axes are not constants")
        s.fresh(out, f"{s._where()}: reduce axes are not constants")
        return
    red = {a % x.rank for a in axes_l} if axes_l else set(range(x.rank))
    if bool(node.attrs.get("reduce_all", False)):
        red = set(range(x.rank))
    if lay.axis in red:
        return  # the channels are summed away: consumers see no channels
    new_axis = lay.axis if keep else lay.axis - sum(1 for r in red if r < lay.axis)
    s.set_layout(out, Layout(new_axis, lay.segs))
