"""Trace a dygraph Layer (or load an inference model) into a :class:`ModelGraph`."""

from __future__ import annotations

import contextlib
import inspect
import os
import types
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from slim_core._paddle import require_paddle
from slim_core.errors import ConfigError, DataError, ModelLoadError, SlimError
from slim_core.graph.ir import ModelGraph

__all__ = ["trace", "graph_from_inference_model", "reinfer_legacy_shapes", "input_specs", "expected_input_hint"]


def input_specs(example_inputs: Any = None, input_spec: Any = None) -> list[Any]:
    """Normalize ``example_inputs`` / ``input_spec`` into a list of ``InputSpec`` (see :func:`slim_core.spec.normalize_input_spec`).

    A single tensor, array or shape list counts as one input; sizes are kept as given (no dynamic batch).
    """
    from slim_core.spec import normalize_input_spec

    if (example_inputs is None) == (input_spec is None):
        raise DataError("pass exactly one of example_inputs (tensors/arrays) or input_spec (InputSpec list or shapes)")
    src = example_inputs if example_inputs is not None else input_spec
    if isinstance(src, (list, tuple)) and not src:
        raise DataError("no inputs given: pass at least one example input or InputSpec")
    try:
        return normalize_input_spec(src, dynamic_batch=False, default_name="x0")
    except ConfigError as exc:  # a shape that cannot be an input is a data problem here
        raise DataError(str(exc)) from exc


def expected_input_hint(layer: Any) -> str:
    """A short description of the input the first parametrized sublayer expects (for error messages)."""
    paddle = require_paddle()
    for name, sub in layer.named_sublayers(include_self=True):
        if isinstance(sub, (paddle.nn.Conv1D, paddle.nn.Conv2D, paddle.nn.Conv3D)):
            nd = {paddle.nn.Conv1D: 1, paddle.nn.Conv2D: 2, paddle.nn.Conv3D: 3}[type(sub)]
            dims = ", ".join(["H", "W", "D"][:nd]) if nd > 1 else "L"
            return f"expected shape [N, {sub._in_channels}, {dims}] (first conv {name or type(sub).__name__} has {sub._in_channels} input channels)"
        if isinstance(sub, paddle.nn.Linear):
            return f"expected shape [..., {sub.weight.shape[0]}] (first linear {name} has {sub.weight.shape[0]} input features)"
        if isinstance(sub, paddle.nn.Embedding):
            return f"expected integer token ids (first embedding {name})"
    return "expected shape unknown"


@contextlib.contextmanager
def _eval_mode(layer: Any) -> Iterator[None]:
    was_training = bool(getattr(layer, "training", False))
    layer.eval()
    try:
        yield
    finally:
        if was_training:
            layer.train()


def _param_names(layer: Any) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    items = list(layer.named_parameters(include_sublayers=True)) + list(layer.named_buffers(include_sublayers=True))
    for path, p in items:
        pname = getattr(p, "name", None)
        if not pname or pname in out:
            continue
        lay, _, attr = path.rpartition(".")
        out[pname] = (lay, attr)
    return out


def trace(layer: Any, example_inputs: Any = None, input_spec: Any = None) -> ModelGraph:
    """Trace a dygraph Layer into a :class:`ModelGraph` through ``paddle.jit.to_static``.

    The layer is traced in eval mode and left as it was (its ``forward`` is not replaced,
    its training flag is restored).

    Args:
        layer: a ``paddle.nn.Layer``.
        example_inputs: tensors or arrays (one, or a list for several inputs); their shapes are used.
        input_spec: ``paddle.static.InputSpec`` list or shape lists, instead of ``example_inputs``.

    Returns:
        The graph; parameters are named by their sublayer path (``"fc.weight"``).

    Raises:
        DataError: the input shape does not fit the model (the message says what the first layer expects).
        UnsupportedOpError: the layer's forward cannot be captured as a static program.

    Example:
        >>> import paddle, slim_core
        >>> net = paddle.vision.models.resnet18(num_classes=10)
        >>> g = slim_core.trace(net, input_spec=[[1, 3, 64, 64]])
        >>> g.op_types()["pd_op.conv2d"]
        20
    """
    paddle = require_paddle()
    from slim_core.errors import UnsupportedOpError

    if not isinstance(layer, paddle.nn.Layer):
        raise DataError(f"trace() needs a paddle.nn.Layer, got {type(layer).__name__}")
    specs = input_specs(example_inputs, input_spec)
    forward = layer.forward
    dyfn = getattr(forward, "dygraph_function", None)  # the user already decorated forward with to_static
    if dyfn is not None:
        forward = types.MethodType(dyfn, layer) if not inspect.ismethod(dyfn) else dyfn
    # to_static on a bound method records it in layer._original_funcs; put that back afterwards
    saved_funcs = dict(getattr(layer, "_original_funcs", {}))
    was_dynamic = paddle.in_dynamic_mode()
    if not was_dynamic:
        paddle.disable_static()
    try:
        with _eval_mode(layer):
            static_fn = paddle.jit.to_static(forward, input_spec=specs, full_graph=True)
            try:
                cp = static_fn.concrete_program
            except SlimError:
                raise
            except Exception as exc:
                msg = str(exc).strip()
                first = next((ln for ln in msg.splitlines() if ln.strip() and "Error" in ln), msg.splitlines()[0] if msg else "")
                low = msg.lower()
                if any(k in low for k in ("shape", "dimension", "mismatch", "channel", "expected", "broadcast")):
                    raise DataError(
                        f"{_inputs_text(specs)} does not fit {type(layer).__name__}: {expected_input_hint(layer)}; Paddle said: {first[:300]}"
                    ) from exc
                raise UnsupportedOpError(f"could not capture {type(layer).__name__}.forward as a static program: {first[:400]}") from exc
    finally:
        if hasattr(layer, "_original_funcs"):
            layer._original_funcs.clear()
            layer._original_funcs.update(saved_funcs)
        if not was_dynamic:
            paddle.enable_static()
    outputs = cp.outputs if isinstance(cp.outputs, (list, tuple)) else [cp.outputs]
    flat: list[Any] = []

    def _flatten(o: Any) -> None:
        if isinstance(o, (list, tuple)):
            for x in o:
                _flatten(x)
        elif isinstance(o, dict):
            for x in o.values():
                _flatten(x)
        elif o is not None:
            flat.append(o)

    _flatten(outputs)
    graph = ModelGraph.from_program(cp.main_program, param_names=_param_names(layer), output_values=flat, source="layer")
    _check_shapes(graph, _inputs_text(specs), layer)
    return graph


_CONV_OPS = ("pd_op.conv2d", "pd_op.conv1d", "pd_op.conv3d", "pd_op.depthwise_conv2d")


def _inputs_text(specs: Sequence[Any]) -> str:
    """``input shape [[-1, 3, 8, 8]] of 'x'``: the shapes, and the input names when the specs carry them."""
    shapes = [list(s.shape) for s in specs]
    names = [getattr(s, "name", None) for s in specs]
    named = f" of {', '.join(repr(n) for n in names)}" if all(names) else ""
    return f"input shape {shapes}{named}"


def _check_shapes(graph: ModelGraph, shapes: str, layer: Any) -> None:
    """Paddle's static build does not always check conv/linear input sizes; do it here."""
    for n in graph.nodes:
        x = n.inputs[0] if n.inputs else None
        w = n.inputs[1] if len(n.inputs) > 1 else None
        if x is None or w is None or w.param is None or x.shape is None or w.shape is None:
            continue
        bad = None
        if n.type in _CONV_OPS:
            fmt = str(n.attrs.get("data_format", "NCHW"))
            cax = 1 if fmt.startswith("NC") else x.rank - 1
            groups = int(n.attrs.get("groups", 1) or 1)
            need = w.shape[1] * groups
            if x.shape[cax] >= 0 and x.shape[cax] != need:
                bad = f"{n.layer or n.type} needs {need} input channels on axis {cax} but gets {x.shape[cax]}"
        elif n.type == "pd_op.matmul" and w.rank == 2 and not n.attrs.get("transpose_x", False):
            need = w.shape[1] if n.attrs.get("transpose_y", False) else w.shape[0]
            if x.shape[-1] >= 0 and x.shape[-1] != need:
                bad = f"{n.layer or n.type} needs {need} input features but gets {x.shape[-1]}"
        if bad:
            raise DataError(f"{shapes} does not fit {type(layer).__name__}: {bad}; {expected_input_hint(layer)}")


def graph_from_inference_model(
    path: str | os.PathLike[str] | Sequence[Any], input_shapes: Sequence[Sequence[int]] | None = None
) -> ModelGraph:
    """Build the graph of a saved inference model (PIR or legacy).

    Args:
        path: the model path.
        input_shapes: one shape per feed, in feed order; given, dynamic dims (``-1``) of the saved
            inputs are fixed and every op's output shape is inferred again (legacy programs), so an
            OCR recognizer saved as ``[-1, 3, 48, -1]`` can be analysed at ``[1, 3, 48, 320]``.

    Raises:
        DataError: a shape that contradicts a fixed dim of the saved input, or a wrong number of shapes.
        UnsupportedOpError: re-inferring shapes of a PIR (``.json``) program, which Paddle does not offer.
    """
    from slim_core.model_io import load_inference_model

    paddle = require_paddle()
    model = load_inference_model(path)  # type: ignore[arg-type]
    program = model.program
    if input_shapes is not None:
        if model.format != "legacy":
            from slim_core.errors import UnsupportedOpError

            raise UnsupportedOpError(
                f"{model.model_file}: fixing input shapes needs a legacy (.pdmodel) program; for a PIR model "
                "re-export it with a static input_spec"
            )
        reinfer_legacy_shapes(program, input_shapes)
    if model.format == "legacy":
        try:
            program = paddle.pir.translate_to_pir(model.program.desc)
        except Exception as exc:
            raise ModelLoadError(f"could not translate legacy program {model.model_file} to PIR: {str(exc).splitlines()[0][:300]}") from exc
    return ModelGraph.from_program(program, source="inference")


def reinfer_legacy_shapes(program: Any, input_shapes: Sequence[Sequence[int]]) -> None:
    """Set the feed shapes of a legacy program and infer every op's output shapes again, in place.

    ``reshape`` outputs that shape inference leaves at ``-1`` (the target came as a tensor) are
    completed from the element count when only one dim is unknown.
    """
    block = program.global_block()
    feeds = sorted((op for op in block.ops if op.type == "feed"), key=lambda op: int(op.attr("col")))
    if len(feeds) != len(input_shapes):
        names = [op.output("Out")[0] for op in feeds]
        raise DataError(f"the model has {len(feeds)} inputs {names} but {len(input_shapes)} input shapes were given")
    for op, shape in zip(feeds, input_shapes):
        var = block.var(op.output("Out")[0])
        saved = list(var.shape)
        shape = [int(d) for d in shape]
        if len(saved) != len(shape) or any(o >= 0 and o != d for o, d in zip(saved, shape)) or any(d <= 0 for d in shape):
            raise DataError(f"input shape {shape} does not match the model input {var.name} with saved shape {saved} (-1 = any)")
        var.desc.set_shape(shape)
    for op in block.ops:
        if op.type in ("feed", "fetch"):
            continue
        try:
            op.desc.infer_shape(block.desc)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise DataError(f"input shapes {[list(s) for s in input_shapes]} do not fit the model: op {op.type} failed: {first}") from exc
        if op.type in ("reshape2", "reshape"):
            _complete_reshape(block, op)


def _complete_reshape(block: Any, op: Any) -> None:
    x = block.var(op.input("X")[0])
    out = block.var(op.output("Out")[0])
    ins, outs = list(x.shape), list(out.shape)
    if any(d < 0 for d in ins) or sum(1 for d in outs if d < 0) != 1:
        return
    known = int(np.prod([d for d in outs if d >= 0])) if len(outs) > 1 else 1
    total = int(np.prod(ins))
    if known > 0 and total % known == 0:
        out.desc.set_shape([total // known if d < 0 else d for d in outs])
