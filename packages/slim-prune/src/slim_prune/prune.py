"""``prune_``: dependency-aware structured pruning that physically removes channels.

The model is traced once into a :class:`slim_core.graph.ModelGraph`; its channel
groups say which parameter slices must go together (a residual add couples the
convs feeding it, a concat offsets the consumer's input channels, a depthwise
conv passes channels through). Each group is scored by a criterion, a planner
decides which channels leave, and only then are parameters sliced and layer
attributes fixed. Any failure before that point leaves the model untouched; a
failure while applying rolls the model back.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from slim_core import ConfigError, SlimError, require_paddle
from slim_core.data import data_errors
from slim_core.errors import error_summary
from slim_core.rollback import in_place
from slim_prune._util import as_inputs, check_layer_names, eval_mode, forward, measure, output_shapes
from slim_prune.config import PruneConfig
from slim_prune.cost import build_cost_models, layer_flops
from slim_prune.criteria import ChannelSlice, needs_grad, score
from slim_prune.layers import handler_for, set_param_value
from slim_prune.planner import global_plan, local_plan, uniform_plan
from slim_prune.result import PruneResult

__all__ = ["prune_", "PruneError", "PrunePlan", "plan_pruning", "apply_plan", "group_name", "model_spec", "prunable_groups"]


class PruneError(SlimError):
    """Pruning was planned but the pruned model failed (the model was rolled back)."""


@dataclass
class PrunePlan:
    """Channels chosen for removal, before anything is changed.

    Attributes:
        groups: the channel groups of the traced model, by id.
        removed: ``{group id: removed channel indices}``.
        names: ``{group id: readable name}`` (the first layer producing the channels).
    """

    groups: dict[int, Any]
    removed: dict[int, list[int]]
    names: dict[int, str]


def group_name(group: Any) -> str:
    """A readable, stable name for a group: the first layer whose weight produces its channels."""
    outs = [m for m in group.members if m.kind == "out" and m.param == "weight"] or [m for m in group.members if m.kind == "out"]
    m = (outs or list(group.members))[0]
    return m.layer


def _ignored(layer: str, ignored: Sequence[str]) -> bool:
    return any(layer == ig or layer.startswith(ig + ".") for ig in ignored)


def prunable_groups(groups: Sequence[Any], ignored: Sequence[str] = ()) -> list[Any]:
    """Groups that may lose channels: not frozen, more than one channel, no ignored member."""
    return [g for g in groups if not g.frozen and g.size > 1 and not any(_ignored(m.layer, ignored) for m in g.members)]


_GRAPHS: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def _fingerprint(model: Any, inputs: Sequence[Any]) -> tuple[Any, ...]:
    params = tuple((n, tuple(int(d) for d in p.shape)) for n, p in model.named_parameters())
    attrs = tuple(
        (n, tuple(sorted(h.attributes(layer).items(), key=str)))
        for n, layer in model.named_sublayers()
        if (h := handler_for(layer, required=False))
    )
    return params, repr(attrs), tuple((tuple(x.shape), str(x.dtype)) for x in inputs)


def _trace(model: Any, inputs: Sequence[Any]) -> Any:
    """The model's graph; reused while parameter shapes and input shapes are unchanged (tracing is slow)."""
    import slim_core

    key = _fingerprint(model, inputs)
    cached = _GRAPHS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    with eval_mode(model):
        graph = slim_core.trace(model, example_inputs=list(inputs))
    _GRAPHS[model] = (key, graph)
    return graph


def _channel_slices(
    model: Any, group: Any, grads: dict[int, np.ndarray] | None, cache: dict[int, np.ndarray] | None = None
) -> list[ChannelSlice]:
    """Lazy per-channel views of every member of ``group``; ``cache`` shares parameter arrays across groups."""
    subs = dict(model.named_sublayers(include_self=True))
    cache = {} if cache is None else cache
    out = []
    for m in group.members:
        layer = subs.get(m.layer)
        param = getattr(layer, m.param, None) if layer is not None else None
        if param is None:
            continue
        idx = np.asarray(group.indices(m, range(group.size)), dtype=np.int64)

        def values(param: Any = param, m: Any = m, idx: np.ndarray = idx) -> np.ndarray:
            if id(param) not in cache:
                cache[id(param)] = np.asarray(param.numpy())
            arr = cache[id(param)]
            whole = len(idx) == arr.shape[m.axis] and bool((idx == np.arange(len(idx))).all())
            picked = arr if whole else np.take(arr, idx, axis=m.axis)  # skip a copy of big weights
            return np.moveaxis(picked, m.axis, 0).reshape(group.size, -1)

        def grad(param: Any = param, m: Any = m, idx: np.ndarray = idx) -> np.ndarray | None:
            if grads is None or id(param) not in grads:
                return None
            return np.moveaxis(np.take(grads[id(param)], idx, axis=m.axis), m.axis, 0).reshape(group.size, -1)

        out.append(ChannelSlice(m.layer, m.param, m.kind, type(layer).__name__, values, grad))
    return out


def _gradients(model: Any, loss_fn: Callable[[Any], Any]) -> dict[int, np.ndarray]:
    with eval_mode(model):  # eval: BN statistics must not move before the model is pruned
        loss = loss_fn(model)
    if not hasattr(loss, "backward"):
        raise ConfigError(f"loss_fn must return a scalar paddle Tensor, got {type(loss).__name__}")
    loss.backward()
    grads = {id(p): np.asarray(p.grad.numpy()) for p in model.parameters() if p.grad is not None}
    model.clear_gradients(set_to_zero=False)
    return grads


def _group_ratios(model: Any, groups: list[Any], all_groups: list[Any], config: PruneConfig) -> dict[int, float]:
    """Ratio per prunable group from ``config.ratio`` / ``config.ratios``."""
    out = {g.id: config.ratio for g in groups if config.ratio}
    ids = {g.id for g in groups}
    for layer, r in config.ratios.items():
        hits = [g for g in all_groups if any(m.layer == layer and m.kind == "out" for m in g.members)]
        hits = hits or [g for g in all_groups if any(m.layer == layer for m in g.members)]
        if not hits:
            raise ConfigError(f"PruneConfig.ratios: layer {layer!r} has no prunable channels (no channel group contains it)")
        usable = [g for g in hits if g.id in ids]
        if not usable:
            g = hits[0]
            why = g.reason if g.frozen else ("it is in ignored_layers" if config.ignored_layers else "it has a single channel")
            raise ConfigError(f"PruneConfig.ratios: the channels of layer {layer!r} cannot be pruned: {why}")
        for g in usable:
            out[g.id] = max(out.get(g.id, 0.0) or 0.0, r)
    return {g: r for g, r in out.items() if r}


def plan_pruning(
    model: Any,
    config: PruneConfig,
    example_inputs: Any,
    *,
    loss_fn: Callable[[Any], Any] | None = None,
    remove_fraction: float | None = None,
    graph: Any = None,
    exclude: set[int] | None = None,
) -> PrunePlan:
    """Choose the channels to remove without changing the model.

    Args:
        model: the Layer.
        config: the pruning config.
        example_inputs: tensor(s) for tracing and FLOPs.
        loss_fn: ``loss_fn(model) -> scalar Tensor`` for gradient criteria (``taylor``).
        remove_fraction: override of the global target for this step (iterative pruning).
        graph: the model's traced :class:`~slim_core.graph.ModelGraph` (default: trace now).
        exclude: group ids never to prune (found to break the forward pass).

    Raises:
        ConfigError: unknown layer names, a criterion that needs ``loss_fn``, an unreachable target.
    """
    if not isinstance(config, PruneConfig):
        raise ConfigError(f"config must be a PruneConfig, got {type(config).__name__}")
    check_layer_names(model, config.ignored_layers, "PruneConfig.ignored_layers")
    check_layer_names(model, list(config.ratios), "PruneConfig.ratios")
    if needs_grad(config.criterion) and loss_fn is None:
        raise ConfigError(f"criterion {config.criterion!r} needs gradients: pass loss_fn=lambda model: <scalar loss on a batch>")
    inputs = as_inputs(example_inputs)
    graph = graph if graph is not None else _trace(model, inputs)
    all_groups = list(graph.channel_groups())
    usable = [g for g in prunable_groups(all_groups, config.ignored_layers) if g.id not in (exclude or set())]
    grads = _gradients(model, loss_fn) if needs_grad(config.criterion) and loss_fn is not None else None
    target = config.target
    if target is None:
        ratios = _group_ratios(model, usable, all_groups, config)
        cache: dict[int, np.ndarray] = {}
        scores = {g.id: score(config.criterion, _channel_slices(model, g, grads, cache)) for g in usable if g.id in ratios}
        removed = local_plan(scores, ratios, config.round_to)
    else:
        if not usable:
            raise ConfigError("no prunable channel group in this model (all groups are frozen or ignored)")
        cache = {}
        scores = {g.id: score(config.criterion, _channel_slices(model, g, grads, cache)) for g in usable}
        flops_model, params_model = build_cost_models(model, usable, layer_flops(graph))
        cost = flops_model if target[0] == "flops" else params_model
        frac = target[1] if remove_fraction is None else remove_fraction
        planner = global_plan if config.global_ranking else uniform_plan
        removed = planner(scores, cost, frac, max_ratio=config.max_ratio, round_to=config.round_to)
    by_id = {g.id: g for g in all_groups}
    return PrunePlan(by_id, {g: r for g, r in removed.items() if r}, {g: group_name(by_id[g]) for g in removed})


def model_spec(model: Any) -> dict[str, Any]:
    """Per-layer parameter shapes and shape attributes: the pruned architecture."""
    spec: dict[str, Any] = {}
    for name, layer in model.named_sublayers(include_self=True):
        params = {n: [int(s) for s in p.shape] for n, p in layer.named_parameters(include_sublayers=False) if p is not None}
        h = handler_for(layer, required=False)
        attrs = h.attributes(layer) if h is not None else {}
        for attr in HEAD_COUNT_ATTRS + HEAD_WIDTH_ATTRS:  # hand-written attention reads its split from these
            val = getattr(layer, attr, None)
            if isinstance(val, int) and not isinstance(val, bool):
                attrs.setdefault(attr, val)
        if params or attrs:
            spec[name] = {"type": type(layer).__name__, "params": params, "attrs": attrs}
    return spec


def _snapshot(model: Any, layers: set[str]) -> dict[str, Any]:
    subs = dict(model.named_sublayers(include_self=True))
    snap = {}
    for name in layers:
        layer = subs[name]
        params = {n: np.array(p.numpy()) for n, p in layer.named_parameters(include_sublayers=False) if p is not None}
        h = handler_for(layer, required=False)
        snap[name] = (params, h.attributes(layer) if h is not None else {})
    return snap


def _sync_parents(model: Any, touched: set[str]) -> None:
    """Parents that track a child's width (MultiHeadAttention.num_heads) follow their children."""
    for name, layer in model.named_sublayers():
        if type(layer).__name__ == "MultiHeadAttention" and any(t.startswith(name + ".") for t in touched):
            handler_for(layer).sync(layer)


HEAD_COUNT_ATTRS = ("num_heads", "heads", "n_heads", "n_head", "nhead", "num_attention_heads")
HEAD_WIDTH_ATTRS = ("head_dim", "dim_head", "head_size", "attention_head_size")


def _head_attr_changes(model: Any, plan: PrunePlan) -> list[tuple[Any, str, int, int]]:
    """``(module, attribute, old, new)`` for attention layers whose head count or head width a plan changes.

    The graph marks groups whose channels a reshape splits into ``(heads, head_dim)``; the layer that
    wrote that reshape reads the split from an attribute (``self.num_heads``, ``self.head_dim``). It is
    found among the parents of the group's layers by name and by its value (equal to the old count).
    """
    subs = dict(model.named_sublayers(include_self=True))
    changes: dict[tuple[int, str], tuple[Any, str, int, int]] = {}
    for gid, removed in plan.removed.items():
        g = plan.groups[gid]
        for role in getattr(g, "roles", ()):
            names = HEAD_COUNT_ATTRS if role == "heads" else HEAD_WIDTH_ATTRS
            parents = []
            for m in g.members:
                path = m.layer
                while path:
                    path = path.rpartition(".")[0]
                    if path in subs and path not in parents:
                        parents.append(path)
            for path in parents:
                mod = subs[path]
                for attr in names:
                    val = getattr(mod, attr, None)
                    if isinstance(val, int) and not isinstance(val, bool) and val == g.size:
                        changes.setdefault((id(mod), attr), (mod, attr, val, g.size - len(removed)))
    return list(changes.values())


def _restore(model: Any, snap: dict[str, Any]) -> None:
    subs = dict(model.named_sublayers(include_self=True))
    for name, (params, attrs) in snap.items():
        layer = subs[name]
        for n, arr in params.items():
            set_param_value(getattr(layer, n), arr)
        for a, v in attrs.items():
            setattr(layer, a, v)
    _sync_parents(model, set(snap))


def apply_plan(
    model: Any, plan: PrunePlan, inputs: Sequence[Any] | None = None, expect_shapes: list[list[int]] | None = None
) -> dict[str, tuple[int, int]]:
    """Slice every member of every planned group and fix the touched layers.

    All groups are applied at once per parameter axis (a concat consumer loses
    channels of several groups in one slice, with the original offsets). When
    ``inputs`` are given the pruned model is run once (and its output shapes compared
    with ``expect_shapes``); on any failure the model is restored and
    :class:`PruneError` raised.

    Returns:
        ``{layer: (out channels before, after)}`` for layers that lost output channels.
    """
    subs = dict(model.named_sublayers(include_self=True))
    cuts: dict[tuple[str, str, int], set[int]] = {}
    for gid, removed in plan.removed.items():
        g = plan.groups[gid]
        for m in g.members:
            cuts.setdefault((m.layer, m.param, m.axis), set()).update(int(i) for i in g.indices(m, removed))
    touched = {layer for layer, _, _ in cuts}
    missing = [t for t in touched if t not in subs]
    if missing:
        raise ConfigError(f"channel group names layer {missing[0]!r}, which the model does not have")
    before = {}
    for name in touched:
        h = handler_for(subs[name], required=False)
        if h is not None and h.out_axes(subs[name]):
            before[name] = h.count_out(subs[name])
    snap = _snapshot(model, touched)
    head_changes = _head_attr_changes(model, plan)
    try:
        for mod, attr, _old, new in head_changes:
            setattr(mod, attr, new)
        for (layer, pname, axis), removed in sorted(cuts.items()):
            param = getattr(subs[layer], pname, None)
            if param is None:
                continue
            keep = [i for i in range(int(param.shape[axis])) if i not in removed]
            set_param_value(param, np.take(np.asarray(param.numpy()), keep, axis=axis))
        for name in sorted(touched):
            h = handler_for(subs[name], required=False)
            if h is not None:
                h.sync(subs[name])
        _sync_parents(model, touched)
        if inputs is not None:
            shapes = output_shapes(forward(model, inputs))
            if expect_shapes is not None and shapes != expect_shapes:
                raise PruneError(f"output shapes changed from {expect_shapes} to {shapes}: a model output was not frozen")
    except Exception as exc:
        for mod, attr, old, _new in head_changes:
            setattr(mod, attr, old)
        _restore(model, snap)
        raise PruneError(f"the pruned model failed ({error_summary(exc)}); the model was restored") from exc
    out = {}
    for name, n in before.items():
        after = handler_for(subs[name]).count_out(subs[name])
        if after != n:
            out[name] = (n, after)
    return out


def _breaking_groups(model: Any, plan: PrunePlan, inputs: Sequence[Any], shapes: list[list[int]]) -> set[int]:
    """Groups whose pruning alone makes the forward fail (e.g. a reshape to a hard-coded width).

    The graph cannot tell ``reshape(x, [-1, 2048])`` from a flatten whose shape was read from
    ``x``; such groups are found by trying each planned group alone and are then left unpruned.
    """

    def breaks(gids: list[int]) -> bool:
        sub = PrunePlan(plan.groups, {g: plan.removed[g] for g in gids}, {g: plan.names.get(g, str(g)) for g in gids})
        snap = _snapshot(model, {m.layer for g in gids for m in plan.groups[g].members})
        heads = _head_attr_changes(model, sub)
        try:
            apply_plan(model, sub, inputs, shapes)
        except PruneError:
            return True  # apply_plan already restored the model
        _restore(model, snap)
        for mod, attr, old, _new in heads:
            setattr(mod, attr, old)
        return False

    def search(gids: list[int]) -> set[int]:
        # adaptive group testing: about 2*log2(n) forwards per culprit instead of n
        if not breaks(gids):
            return set()
        if len(gids) == 1:
            return set(gids)
        half = len(gids) // 2
        return search(gids[:half]) | search(gids[half:])

    gids = sorted(plan.removed)
    return search(gids) if len(gids) > 1 else set(gids)


@in_place
def prune_(
    model: Any,
    config: PruneConfig,
    example_inputs: Any,
    *,
    loss_fn: Callable[[Any], Any] | None = None,
    step_fn: Callable[[Any, int], None] | None = None,
) -> PruneResult:
    """Remove channels from ``model`` in place, following the channel dependency graph.

    Args:
        model: a ``paddle.nn.Layer``; it stays a normal Layer (forward, training,
            ``paddle.jit.save``). Build optimizers after pruning: parameter shapes change.
        config: :class:`PruneConfig` (target, criterion, ignored layers, rounding, steps).
        example_inputs: a tensor or list of tensors (small spatial size is fine) used to
            trace the graph and measure FLOPs.
        loss_fn: ``loss_fn(model) -> scalar loss Tensor`` on a batch; required by ``taylor``.
        step_fn: called as ``step_fn(model, step)`` after each of ``config.steps`` steps but
            the last (for example a short fine-tune).

    Returns:
        :class:`PruneResult` with FLOPs/params before and after, channel counts and removed indices.

    All or nothing: when anything fails after pruning started (a later step, ``step_fn`` or
    ``loss_fn`` raising, Ctrl-C), the model is restored to its state before the call, every
    step undone (see :mod:`slim_core.rollback`); the exception is re-raised.

    Raises:
        ConfigError: invalid config for this model (unknown layer, unreachable target...);
            the model is unchanged.
        DataError: ``example_inputs`` empty or holding NaN/inf; the model is unchanged.
        PruneError: the pruned model failed to run; the model was restored.

    Example:
        >>> import paddle, slim_prune
        >>> model = paddle.vision.models.resnet18(num_classes=10)
        >>> res = slim_prune.prune_(model, slim_prune.PruneConfig(flops_ratio=0.5), paddle.randn([1, 3, 64, 64]))
        >>> round(res.flops_ratio, 1)
        0.5
    """
    require_paddle()
    inputs = as_inputs(example_inputs)
    if not isinstance(config, PruneConfig):
        raise ConfigError(f"config must be a PruneConfig, got {type(config).__name__}")
    with data_errors(model, inputs, where="example_inputs"):
        shapes_before = output_shapes(forward(model, inputs))
    graph = _trace(model, inputs)
    flops_before, params_before = measure(model, graph)
    channels: dict[str, tuple[int, int]] = {}
    removed: dict[str, list[int]] = {}
    target = config.target
    for step in range(1, config.steps + 1):
        frac = None
        step_config = config
        if config.steps > 1:
            if target is not None:
                kind, total_frac = target
                goal = (1.0 - total_frac) ** (step / config.steps)
                now_f, now_p = measure(model, graph) if step > 1 else (flops_before, params_before)
                ref_before = flops_before if kind == "flops" else params_before
                now = now_f if kind == "flops" else now_p
                frac = max(0.0, 1.0 - goal * ref_before / now) if now else 0.0
            else:
                per_step = {k: 1.0 - (1.0 - v) ** (1.0 / config.steps) for k, v in config.ratios.items()}
                base = None if config.ratio is None else 1.0 - (1.0 - config.ratio) ** (1.0 / config.steps)
                step_config = config.replace(ratio=base, ratios=per_step)
        exclude: set[int] = set()
        broke: list[str] = []
        while True:
            try:
                plan = plan_pruning(model, step_config, inputs, loss_fn=loss_fn, remove_fraction=frac, graph=graph, exclude=exclude)
            except ConfigError as exc:
                if not exclude:
                    raise
                raise ConfigError(
                    f"{exc}; left unpruned because pruning them alone makes the forward fail: {', '.join(broke)} "
                    "(a reshape or slice in the model's code that does not follow the width, e.g. a head width "
                    "computed from the input width)"
                ) from exc
            try:
                changed = apply_plan(model, plan, inputs, shapes_before)
                break
            except PruneError:
                bad = _breaking_groups(model, plan, inputs, shapes_before)
                if not bad or bad <= exclude:
                    raise
                broke += [f"{plan.names.get(g, g)} ({plan.groups[g].size} channels)" for g in sorted(bad - exclude)]
                exclude |= bad
        for layer, (b, a) in changed.items():
            channels[layer] = (channels.get(layer, (b, a))[0], a)
        suffix = f"@{step}" if config.steps > 1 else ""
        for gid, idx in plan.removed.items():
            removed[plan.names[gid] + suffix] = list(idx)
        if step_fn is not None and step < config.steps:
            step_fn(model, step)
        graph = _trace(model, inputs)
    flops_after, params_after = measure(model, graph)
    return PruneResult(flops_before, flops_after, params_before, params_after, channels, removed, model_spec(model))
