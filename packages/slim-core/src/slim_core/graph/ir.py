"""The graph data structure: ops (:class:`Node`) joined by tensors (:class:`Value`).

A :class:`ModelGraph` is a plain-Python copy of a PIR program: it keeps no Paddle
objects in its nodes, so it can be inspected, cached and compared freely. Values
produced by ``builtin.parameter`` ops are not nodes; they are values whose
``param`` is the parameter's qualified name (``"layer1.0.conv1.weight"`` for a
traced Layer, the program's variable name for an inference model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slim_core.graph.channels import ChannelGroup

__all__ = ["Value", "Node", "ModelGraph", "ParamInfo"]

# Ops that only change a parameter's view (conv bias reshaped to [1, C, 1, 1]); the
# result still "is" the parameter for ownership purposes.
VIEW_OPS = frozenset({"pd_op.reshape", "pd_op.squeeze", "pd_op.unsqueeze", "pd_op.transpose", "pd_op.cast", "pd_op.flatten"})


@dataclass(eq=False)
class Value:
    """A tensor (or a vector of tensors for ``builtin.combine``) in the graph.

    Attributes:
        id: unique id inside the graph.
        shape: static shape (``-1`` for unknown dims); None for vector values.
        dtype: dtype name such as ``"float32"``; None for vector values.
        producer: the node that computes it (None for parameters).
        index: which output of ``producer`` it is.
        consumers: nodes that read it, in program order.
        param: qualified parameter name when the value is a parameter (or a view of one).
        name: feed name for graph inputs.
    """

    id: int
    shape: tuple[int, ...] | None
    dtype: str | None
    producer: Node | None = None
    index: int = 0
    consumers: list[Node] = field(default_factory=list)
    param: str | None = None
    name: str | None = None

    @property
    def rank(self) -> int:
        return len(self.shape) if self.shape is not None else 0

    @property
    def numel(self) -> int:
        """Number of elements (unknown dims count as 1)."""
        n = 1
        for d in self.shape or ():
            n *= max(int(d), 1)
        return n

    @property
    def is_float(self) -> bool:
        return bool(self.dtype) and ("float" in self.dtype or "bfloat" in self.dtype)

    def __repr__(self) -> str:
        src = f"param {self.param}" if self.param else (self.producer.type if self.producer else "input")
        return f"Value(%{self.id}, shape={list(self.shape) if self.shape is not None else None}, {self.dtype}, from {src})"


@dataclass(eq=False)
class Node:
    """One op of the program.

    Attributes:
        index: position in program order (parameter ops excluded).
        type: op name, e.g. ``"pd_op.conv2d"``.
        attrs: op attributes as Python values (call stacks dropped).
        inputs: operand values (None for an empty optional operand).
        input_names: operand names from the op definition (``["input", "filter"]``), or ``x0, x1, ...``.
        outputs: result values.
        layer: owning sublayer path (``"layer1.0.conv1"``) when the op reads parameters of one sublayer, else None.
        params: ``{operand name: qualified parameter name}`` for parameter operands.
        block: ``index`` of the control-flow node (``pd_op.while``, ``pd_op.if``) whose sub-block holds
            this op, None for ops of the main block.
    """

    index: int
    type: str
    attrs: dict[str, Any]
    inputs: list[Value | None]
    input_names: list[str]
    outputs: list[Value]
    layer: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    block: int | None = None

    def input(self, name: str) -> Value | None:
        """The operand called ``name`` (``"x"``, ``"filter"``), or None."""
        if name in self.input_names:
            return self.inputs[self.input_names.index(name)]
        return None

    @property
    def output(self) -> Value:
        """The first result."""
        return self.outputs[0]

    def __repr__(self) -> str:
        where = f" layer={self.layer!r}" if self.layer is not None else ""
        return f"Node(#{self.index} {self.type}{where})"


@dataclass(frozen=True)
class ParamInfo:
    """Where a parameter lives: ``layer`` path, attribute ``attr`` on it, its shape and dtype."""

    name: str
    layer: str
    attr: str
    shape: tuple[int, ...]
    dtype: str
    program_name: str


class ModelGraph:
    """The model as ops and values, with parameter ownership and channel groups.

    Build it with :func:`slim_core.trace` (a dygraph Layer) or
    :meth:`ModelGraph.from_inference_model` (a saved inference model).

    Attributes:
        nodes: ops in program order (``builtin.parameter`` ops excluded; see ``params``).
        values: every value, parameters included.
        inputs: graph input values in feed order.
        outputs: graph output values.
        params: ``{qualified name: ParamInfo}``.
        source: ``"layer"`` or ``"inference"``.
        sub_nodes: ``{control-flow node index: ops of its sub-blocks}`` (a ``while`` body, both
            branches of an ``if``); those ops are not in ``nodes``, whose rules see the main block only.

    Example:
        >>> g = slim_core.trace(model, input_spec=[paddle.static.InputSpec([1, 3, 64, 64])])  # doctest: +SKIP
        >>> [n.type for n in g.layer_nodes("conv1")]                                           # doctest: +SKIP
        ['pd_op.conv2d']
        >>> g.channel_groups()[0].members                                                      # doctest: +SKIP
    """

    def __init__(
        self,
        nodes: list[Node],
        values: list[Value],
        inputs: list[Value],
        outputs: list[Value],
        params: dict[str, ParamInfo],
        source: str,
        program: Any = None,
        sub_nodes: dict[int, list[Node]] | None = None,
    ) -> None:
        self.nodes = nodes
        self.sub_nodes = sub_nodes or {}
        self.values = values
        self.inputs = inputs
        self.outputs = outputs
        self.params = params
        self.source = source
        self.program = program
        self._groups: dict[bool, list[ChannelGroup]] = {}

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_program(
        cls,
        program: Any,
        *,
        param_names: dict[str, tuple[str, str]] | None = None,
        output_values: list[Any] | None = None,
        source: str = "layer",
    ) -> ModelGraph:
        """Build a graph from a PIR ``paddle.pir.Program``.

        Args:
            program: the PIR program.
            param_names: ``{program parameter name: (layer path, attribute)}``; parameters not in it
                keep their program name as ``layer`` path with an empty attribute.
            output_values: PIR values that are model outputs (``pd_op.fetch`` operands are added).
            source: ``"layer"`` or ``"inference"``.
        """
        from slim_core.graph.build import build_graph

        return build_graph(cls, program, param_names=param_names or {}, output_values=output_values or [], source=source)

    @classmethod
    def from_inference_model(cls, path: Any, input_shapes: Any = None) -> ModelGraph:
        """Load an inference model (PIR ``.json`` or legacy ``.pdmodel``) and build its graph.

        Legacy programs are translated to PIR first. Parameters are named by their
        program variable names (there is no Layer to map them to), so channel
        members carry ``layer=""`` and ``param=<variable name>``.

        Args:
            path: the model path.
            input_shapes: one shape per input; fixes dynamic dims and re-infers every shape
                (legacy programs; see :func:`slim_core.graph.trace.graph_from_inference_model`).

        Raises:
            ModelLoadError: missing or corrupt files.
            DataError: input shapes that do not fit the saved inputs.
        """
        from slim_core.graph.trace import graph_from_inference_model

        return graph_from_inference_model(path, input_shapes)

    # -- queries ----------------------------------------------------------------------
    def layer_nodes(self, layer_name: str) -> list[Node]:
        """Nodes owned by the sublayer ``layer_name`` (exact path), in program order."""
        return [n for n in self.nodes if n.layer == layer_name]

    def body(self, node: Node) -> list[Node]:
        """The ops of ``node``'s sub-blocks (a ``while`` loop body), in program order; [] for other ops.

        Example:
            >>> [n.type for n in g.body(g.nodes_of_type("pd_op.while")[0])][:2]   # doctest: +SKIP
            ['pd_op.matmul', 'pd_op.add']
        """
        return self.sub_nodes.get(node.index, [])

    def all_nodes(self) -> list[Node]:
        """Main-block nodes with each control-flow node's sub-block ops right after it."""
        out: list[Node] = []

        def add(n: Node) -> None:
            out.append(n)
            for b in self.sub_nodes.get(n.index, []):
                add(b)

        for n in self.nodes:
            add(n)
        return out

    def nodes_of_type(self, *types: str) -> list[Node]:
        """Nodes whose ``type`` is one of ``types``."""
        want = set(types)
        return [n for n in self.nodes if n.type in want]

    def op_types(self) -> dict[str, int]:
        """``{op type: count}`` over the nodes."""
        out: dict[str, int] = {}
        for n in self.nodes:
            out[n.type] = out.get(n.type, 0) + 1
        return out

    def param_value(self, name: str) -> Value | None:
        """The value of parameter ``name`` (qualified name), or None."""
        for v in self.values:
            if v.param == name and v.producer is None:
                return v
        return None

    def channel_groups(self, *, strict: bool = False) -> list[ChannelGroup]:
        """The sets of parameter slices that must be pruned together.

        Args:
            strict: raise :class:`~slim_core.UnsupportedOpError` on an op without a channel
                rule instead of freezing the channels around it.

        Returns:
            Groups ordered by first appearance; frozen groups carry a ``reason``.
        """
        if strict not in self._groups:
            from slim_core.graph.channels import solve_channel_groups

            self._groups[strict] = solve_channel_groups(self, strict=strict)
        return self._groups[strict]

    def __repr__(self) -> str:
        return f"ModelGraph({len(self.nodes)} ops, {len(self.params)} params, source={self.source!r})"
