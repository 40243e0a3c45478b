"""Copy a PIR program into a :class:`~slim_core.graph.ir.ModelGraph`."""

from __future__ import annotations

from typing import Any

from slim_core.graph.ir import VIEW_OPS, Node, ParamInfo, Value

__all__ = ["build_graph", "python_attrs"]

_DROP_ATTRS = {"op_callstack", "stop_gradient", "place"}


def _py(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_py(x) for x in v]
    return str(v).replace("DataType.", "").split(":")[0].lower() if "DataType" in str(v) else str(v)


def python_attrs(op: Any) -> dict[str, Any]:
    """An op's attributes as plain Python values (call stacks and placement dropped)."""
    out = {}
    for k, v in op.attrs().items():
        if k in _DROP_ATTRS:
            continue
        out[k] = _py(v)
    return out


def _dtype_name(v: Any) -> str | None:
    try:
        s = str(v.dtype)
    except Exception:  # vector / non-tensor types have no dtype
        return None
    return s.replace("paddle.", "").lower()


def _shape(v: Any) -> tuple[int, ...] | None:
    try:
        if not v.is_dense_tensor_type():
            return None
        return tuple(int(d) for d in v.shape)
    except Exception:  # vector values have no shape
        return None


def _blocks(op: Any) -> list[Any]:
    """The sub-blocks of a control-flow op (while body, if branches), else []."""
    try:
        if op.num_regions() == 0:
            return []
        return list(op.blocks())
    except Exception:  # ops without regions
        return []


def build_graph(cls: Any, program: Any, *, param_names: dict[str, tuple[str, str]], output_values: list[Any], source: str) -> Any:
    values: list[Value] = []
    by_id: dict[str, Value] = {}
    params: dict[str, ParamInfo] = {}
    nodes: list[Node] = []
    inputs: list[Value] = []
    sub_nodes: dict[int, list[Node]] = {}
    counter = [0]

    def new_value(pv: Any, producer: Node | None, index: int) -> Value:
        val = Value(id=len(values), shape=_shape(pv), dtype=_dtype_name(pv), producer=producer, index=index)
        values.append(val)
        by_id[pv.id] = val
        return val

    def walk(ops: Any, owner: Node | None) -> list[Node]:
        out_nodes: list[Node] = []
        for op in ops:
            node = visit(op, owner)
            if node is not None:
                out_nodes.append(node)
        return out_nodes

    def visit(op: Any, owner: Node | None) -> Node | None:
        name = op.name()
        if name == "builtin.parameter":
            pname = op.attrs()["parameter_name"]
            pv = op.result(0)
            val = new_value(pv, None, 0)
            layer, attr = param_names.get(pname, ("", pname))
            qual = f"{layer}.{attr}" if layer else attr
            val.param = qual
            params[qual] = ParamInfo(name=qual, layer=layer, attr=attr, shape=val.shape or (), dtype=val.dtype or "", program_name=pname)
            return None
        if name == "builtin.constant_op" or name == "builtin.constant":
            # inference programs keep parameters as persistable constants
            attrs = op.attrs()
            pname = attrs.get("value") if isinstance(attrs.get("value"), str) else None
            pv = op.result(0)
            val = new_value(pv, None, 0)
            if pname:
                val.param = pname
                params[pname] = ParamInfo(pname, "", pname, val.shape or (), val.dtype or "", pname)
            return None
        operands = [op.operand_source(i) for i in range(op.num_operands())]
        ins: list[Value | None] = []
        for o in operands:
            ins.append(by_id.get(o.id) if o is not None and o.initialized() else None)
        try:
            in_names = list(op.get_input_names())
        except Exception:  # builtin ops have no yaml info
            in_names = []
        if len(in_names) != len(ins):
            in_names = [f"x{i}" for i in range(len(ins))]
        node = Node(
            index=counter[0],
            type=name,
            attrs=python_attrs(op),
            inputs=ins,
            input_names=in_names,
            outputs=[],
            block=owner.index if owner else None,
        )
        counter[0] += 1
        for i in range(op.num_results()):
            node.outputs.append(new_value(op.result(i), node, i))
        for v in ins:
            if v is not None:
                v.consumers.append(node)
        # parameter ownership: direct parameter operands and views of them
        for role, v in zip(in_names, ins):
            if v is not None and v.param is not None:
                node.params[role] = v.param
        if name in VIEW_OPS and ins and ins[0] is not None and ins[0].param is not None:
            for out in node.outputs[:1]:
                out.param = ins[0].param
        layers = {params[p].layer for p in node.params.values() if p in params and params[p].layer}
        if len(layers) == 1:
            node.layer = layers.pop()
        if name in ("pd_op.data", "pd_op.feed") and owner is None:
            node.outputs[0].name = node.attrs.get("name")
            inputs.append(node.outputs[0])
        body: list[Node] = []
        for blk in _blocks(op):
            for arg in blk.args():
                new_value(arg, None, 0)  # loop-carried values: fed by the op's operands and the body's yield
            body.extend(walk(blk.ops, node))
        if body:
            sub_nodes[node.index] = body
        return node

    nodes = walk(program.global_block().ops, None)

    outs: list[Value] = []
    for ov in output_values:
        try:
            v = by_id.get(ov.id)
        except Exception:  # non-Value outputs (python constants) are not graph outputs
            v = None
        if v is not None and v not in outs:
            outs.append(v)
    for n in nodes:
        if n.type == "pd_op.fetch" and n.inputs and n.inputs[0] is not None and n.inputs[0] not in outs:
            outs.append(n.inputs[0])
    return cls(nodes=nodes, values=values, inputs=inputs, outputs=outs, params=params, source=source, program=program, sub_nodes=sub_nodes)
