"""Per-layer table: name, type, output shape, parameters, FLOPs and share of the total."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from slim_analysis._model import analysed
from slim_analysis.flops import _numel, _trips_of, counted_nodes, loop_flops, node_flops, unknown_ops
from slim_core import require_paddle

__all__ = ["LayerRow", "ModelSummary", "summary"]


@dataclass(frozen=True)
class LayerRow:
    """One row of a :class:`ModelSummary`.

    ``name`` is the sublayer path for ops that own parameters; ops without parameters
    (activations, residual adds, pooling) are pooled per op type in rows named
    ``"(pd_op.add)"`` with ``type="ops"``.
    """

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    flops: int
    share: float
    ops: int = 1


@dataclass
class ModelSummary:
    """Result of :func:`summary`.

    Attributes:
        rows: per-layer rows in program order, then the pooled op rows.
        total_flops: FLOPs of one forward pass (1 FLOP = 1 MAC).
        total_params: parameter elements.
        input_shapes: the shapes analysed.
        unknown_ops: op types counted as 0 FLOPs because no counter knows them.
        loops: ``{"pd_op.while#<index>": {"flops_per_iteration": f, "trips": n}}``; the rows count
            each loop body ``trips`` times.
    """

    rows: list[LayerRow]
    total_flops: int
    total_params: int
    input_shapes: list[list[int]]
    unknown_ops: dict[str, int] = field(default_factory=dict)
    loops: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "total_flops": self.total_flops,
            "total_params": self.total_params,
            "input_shapes": self.input_shapes,
            "flops_definition": "1 FLOP = 1 multiply-accumulate",
            "unknown_ops": dict(self.unknown_ops),
            "loops": {k: dict(v) for k, v in self.loops.items()},
            "rows": [{**asdict(r), "output_shape": list(r.output_shape) if r.output_shape is not None else None} for r in self.rows],
        }

    def to_markdown(self, max_rows: int | None = None) -> str:
        """A Markdown table plus a totals line."""
        head = "| layer | type | output shape | params | FLOPs | share |\n|---|---|---|---:|---:|---:|"
        rows = self.rows if max_rows is None else self.rows[:max_rows]
        lines = [head]
        for r in rows:
            shape = "x".join(str(d) for d in r.output_shape) if r.output_shape else "-"
            lines.append(f"| {r.name} | {r.type} | {shape} | {r.params:,} | {r.flops:,} | {100 * r.share:.1f}% |")
        if max_rows is not None and len(self.rows) > max_rows:
            lines.append(f"| ... {len(self.rows) - max_rows} more rows | | | | | |")
        lines.append("")
        lines.append(
            f"Total: {self.total_params:,} params, {self.total_flops:,} FLOPs ({self.total_flops / 1e9:.3f} G; 1 FLOP = 1 MAC) "
            f"for input {self.input_shapes}"
        )
        for name, lp in self.loops.items():
            lines.append(
                f"Loop {name}: {lp['flops_per_iteration']:,} FLOPs per iteration x {lp['trips']} trip(s) (pass loop_trips / --loop-trips)"
            )
        if self.unknown_ops:
            lines.append(f"Counted as 0 FLOPs (no counter): {', '.join(f'{k} x{v}' for k, v in sorted(self.unknown_ops.items()))}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def _layer_types(model: Any) -> dict[str, str]:
    paddle = require_paddle()
    if isinstance(model, paddle.nn.Layer):
        return {name: type(sub).__name__ for name, sub in model.named_sublayers(include_self=True)}
    return {}


def summary(model: Any, input_shape: Any = None, *, example_inputs: Any = None, loop_trips: Any = None) -> ModelSummary:
    """Per-layer parameters and FLOPs.

    Args:
        model: a ``paddle.nn.Layer``, a :class:`slim_core.ModelGraph`, or an inference-model path.
        input_shape: ``[1, 3, 224, 224]`` (or a list of shapes).
        example_inputs: tensors instead of ``input_shape``.
        loop_trips: iterations of ``while`` loops (an int, or ``{node index: trips}``; default 1).

    Returns:
        A :class:`ModelSummary`; ``print(s.to_markdown())`` shows the table.

    Example:
        >>> import paddle, slim_analysis
        >>> s = slim_analysis.summary(paddle.vision.models.resnet18(num_classes=10), [1, 3, 64, 64])
        >>> s.rows[0].name, s.rows[0].type
        ('conv1', 'Conv2D')
    """
    g, batch = analysed(model, input_shape, example_inputs)
    types = _layer_types(model)
    by_key: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    pooled: dict[str, dict[str, Any]] = {}
    for n, mult in counted_nodes(g, loop_trips):
        f = batch * mult * node_flops(n)
        key = n.layer
        if key is None and n.params:  # inference models: group by the parameter name prefix ("conv2d_0")
            key = sorted(n.params.values())[0].rsplit(".", 1)[0]
        if key is not None:
            if key not in by_key:
                by_key[key] = {"flops": 0, "params": set(), "shape": None, "ops": 0, "type": types.get(key, n.type)}
                order.append(key)
            row = by_key[key]
            row["flops"] += f
            row["ops"] += 1
            row["params"].update(n.params.values())
            if n.outputs and n.outputs[0].shape is not None:
                row["shape"] = n.outputs[0].shape
        elif f > 0:
            row = pooled.setdefault(n.type, {"flops": 0, "ops": 0, "shape": None})
            row["flops"] += f
            row["ops"] += 1
    total_flops = sum(r["flops"] for r in by_key.values()) + sum(r["flops"] for r in pooled.values())
    total_params = sum(_numel(p.shape) for p in g.params.values())
    denom = max(total_flops, 1)
    rows = [
        LayerRow(
            name=k,
            type=by_key[k]["type"],
            output_shape=by_key[k]["shape"],
            params=sum(_numel(g.params[p].shape) for p in by_key[k]["params"] if p in g.params),
            flops=by_key[k]["flops"],
            share=by_key[k]["flops"] / denom,
            ops=by_key[k]["ops"],
        )
        for k in order
    ]
    rows += [
        LayerRow(name=f"({t})", type="ops", output_shape=None, params=0, flops=r["flops"], share=r["flops"] / denom, ops=r["ops"])
        for t, r in sorted(pooled.items(), key=lambda kv: -kv[1]["flops"])
    ]
    shapes = [list(v.shape) for v in g.inputs if v.shape is not None]
    if batch != 1:
        shapes = [[batch, *s[1:]] for s in shapes]
    whiles = {f"pd_op.while#{n.index}": n for n in g.all_nodes() if n.type == "pd_op.while"}
    loops = {k: {"flops_per_iteration": batch * v, "trips": _trips_of(whiles[k], loop_trips)} for k, v in loop_flops(g).items()}
    return ModelSummary(
        rows=rows, total_flops=total_flops, total_params=total_params, input_shapes=shapes, unknown_ops=unknown_ops(g), loops=loops
    )
