"""Find which layer feeds which, from the PIR program of a traced copy of the model.

BN folding and re-parameterization need to know that a BatchNorm reads the output
of exactly one conv/linear and nothing else reads it. Attribute order in a Layer
says nothing about that, so we trace a deep copy with ``paddle.jit.to_static`` and
read the data flow from the program.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slim_core import ExportError, require_paddle
from slim_core.layers import get_sublayer, set_sublayer
from slim_deploy.errors import summarize
from slim_deploy.spec import check_spec_matches_forward, normalize_input_spec

__all__ = ["LinearBNPair", "trace_program", "find_linear_bn_pairs", "get_sublayer", "set_sublayer"]

_LINEAR_OPS = {"pd_op.conv2d": "conv", "pd_op.conv3d": "conv", "pd_op.depthwise_conv2d": "conv", "pd_op.matmul": "linear"}
_BN_OPS = {"pd_op.batch_norm_", "pd_op.batch_norm"}
_PASS_OPS = {"pd_op.reshape", "pd_op.unsqueeze", "pd_op.full_int_array", "builtin.combine"}


@dataclass(frozen=True)
class LinearBNPair:
    """A conv or linear layer whose only consumer is a BatchNorm layer (paths are sublayer names)."""

    linear: str
    bn: str


def trace_program(model: Any, input_spec: Any) -> tuple[Any, dict[str, str]]:
    """Trace a deep copy of ``model``.

    Returns:
        ``(program, owner)``: the PIR program and a map from parameter/buffer name in
        the program to ``"sublayer.path:attr"`` of the original model.

    Raises:
        ConfigError: the input spec is malformed or does not match ``forward``.
        ExportError: Paddle cannot trace the model with that spec.
    """
    paddle = require_paddle()
    specs = normalize_input_spec(input_spec, dynamic_batch=False)
    check_spec_matches_forward(model, specs)
    twin = copy.deepcopy(model)
    twin.eval()
    owner: dict[str, str] = {}
    for path, sub in twin.named_sublayers(include_self=True):
        for attr, p in list(sub._parameters.items()) + list(sub._buffers.items()):
            if p is not None:
                owner[p.name] = f"{path}:{attr}"
    try:
        static = paddle.jit.to_static(twin, input_spec=specs, full_graph=True)
        program = static.forward.concrete_program.main_program
    except Exception as exc:
        first = summarize(exc)
        raise ExportError(f"could not trace {type(model).__name__} with input spec {[list(s.shape) for s in specs]}: {first}") from exc
    finally:
        if not paddle.in_dynamic_mode():  # a failed trace can leave static mode on
            paddle.disable_static()
    return program, owner


def _param_of(value: Any) -> str | None:
    op = value.get_defining_op()
    while op is not None and op.name() in ("pd_op.reshape", "pd_op.unsqueeze"):
        op = op.operand_source(0).get_defining_op()
    if op is not None and op.name() == "builtin.parameter":
        return op.attrs().get("parameter_name")
    return None


def _uses(value: Any) -> int:
    return len(value.all_used_ops())


def find_linear_bn_pairs(model: Any, input_spec: Any) -> list[LinearBNPair]:
    """Conv/Linear layers whose output goes only into a BatchNorm, proven on the traced program.

    A pair is reported only when: the BN's input is the conv/linear output (after
    its own bias add), that value has no other consumer, each layer is called
    exactly once in the forward pass, and the layer types are the plain Paddle ones.
    """
    paddle = require_paddle()
    nn = paddle.nn
    program, owner = trace_program(model, input_spec)
    ops = list(program.global_block().ops)
    param_uses: dict[str, int] = {}
    for op in ops:
        if op.name() == "builtin.parameter":
            param_uses[op.attrs()["parameter_name"]] = _uses(op.result(0))
    pairs: list[LinearBNPair] = []
    for op in ops:
        if op.name() not in _BN_OPS:
            continue
        mean_name = _param_of(op.operand_source(1))
        if mean_name is None or mean_name not in owner:
            continue
        bn_path = owner[mean_name].split(":")[0]
        value = op.operand_source(0)
        if _uses(value) != 1:
            continue
        prod = value.get_defining_op()
        if prod is not None and prod.name() == "pd_op.add":  # the linear/conv bias
            bias = _param_of(prod.operand_source(1))
            if bias is None or param_uses.get(bias) != 1:
                continue
            value = prod.operand_source(0)
            if _uses(value) != 1:
                continue
            prod = value.get_defining_op()
        if prod is None or prod.name() not in _LINEAR_OPS:
            continue
        weight = _param_of(prod.operand_source(1))
        if weight is None or weight not in owner or param_uses.get(weight) != 1 or param_uses.get(mean_name) != 1:
            continue
        lin_path = owner[weight].split(":")[0]
        lin = get_sublayer(model, lin_path)
        bn = get_sublayer(model, bn_path)
        ok_lin = isinstance(lin, (nn.Conv2D, nn.Conv3D)) or (isinstance(lin, nn.Linear) and _LINEAR_OPS[prod.name()] == "linear")
        ok_bn = isinstance(bn, nn.layer.norm._BatchNormBase) or (isinstance(bn, nn.BatchNorm) and getattr(bn, "_act", None) is None)
        if ok_lin and ok_bn and bn_path and lin_path:
            pairs.append(LinearBNPair(lin_path, bn_path))
    return pairs


def layer_names(model: Any, types: Sequence[type]) -> list[str]:
    return [n for n, s in model.named_sublayers() if isinstance(s, tuple(types))]
