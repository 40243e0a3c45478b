"""The model graph: a Paddle PIR program as ops and values, with parameter ownership and channel groups.

Example:
    >>> import paddle, slim_core
    >>> net = paddle.vision.models.resnet18(num_classes=10)
    >>> g = slim_core.trace(net, input_spec=[[1, 3, 64, 64]])
    >>> g.layer_nodes("conv1")[0].type
    'pd_op.conv2d'
    >>> any(m.layer == "conv1" for grp in g.channel_groups() for m in grp.members)
    True
"""

from slim_core.graph import rules as _rules  # noqa: F401  (built-in rules registered before any user rule)
from slim_core.graph.channels import (
    CHANNEL_RULES,
    ChannelGroup,
    ChannelMember,
    ChannelSolver,
    Layout,
    register_channel_rule,
    solve_channel_groups,
)
from slim_core.graph.ir import ModelGraph, Node, ParamInfo, Value
from slim_core.graph.trace import trace

__all__ = [
    "trace",
    "ModelGraph",
    "Node",
    "Value",
    "ParamInfo",
    "ChannelGroup",
    "ChannelMember",
    "ChannelSolver",
    "Layout",
    "CHANNEL_RULES",
    "register_channel_rule",
    "solve_channel_groups",
]
