"""Model-zoo-style networks (hand-written attention, split + shuffle, split into scales, slices,
concat feeding an add): their channels are followed through reshape/transpose/split/slice, not frozen."""

from __future__ import annotations

import functools

import paddle
import pytest

import slim_core
from slim_core.graph.zoo import STYLE_MODELS, build_style_model

NAMES = sorted(STYLE_MODELS)
X = [1, 3, 32, 32]


@functools.cache
def _graph(name):
    paddle.seed(0)
    model = build_style_model(name)
    return model, slim_core.trace(model, input_spec=[X])


def _io_only(reason: str) -> bool:
    return all(r.strip() == "model output" or r.strip().startswith("model input") for r in reason.split(";"))


@pytest.mark.parametrize("name", NAMES)
def test_style_model_groups_are_prunable(name):
    """Fewer than 20% of the groups freeze for reasons other than the model's input/output (none today)."""
    _, g = _graph(name)
    groups = g.channel_groups()
    other = [grp.reason for grp in groups if grp.frozen and not _io_only(grp.reason)]
    assert len(other) < 0.2 * len(groups), other
    assert sum(not grp.frozen for grp in groups) >= 4


@pytest.mark.parametrize("name", NAMES)
def test_style_model_groups_tile_every_weight(name):
    """Each conv/linear weight axis is covered exactly once (offset/repeat members of split and tied spaces included)."""
    model, g = _graph(name)
    spans: dict[tuple[str, str, int], list[tuple[int, int, int]]] = {}
    for grp in g.channel_groups():
        for m in grp.members:
            idx = grp.indices(m, range(grp.size))
            spans.setdefault((m.layer, m.param, m.axis), []).extend(idx)
    for lname, sub in model.named_sublayers():
        if not isinstance(sub, (paddle.nn.Conv2D, paddle.nn.Linear)):
            continue
        axes = [0] if isinstance(sub, paddle.nn.Conv2D) and sub._groups > 1 else [0, 1]
        for axis in axes:
            got = sorted(spans.get((lname, "weight", axis), []))
            assert got == list(range(sub.weight.shape[axis])), f"{lname}.weight axis {axis}"


def test_hand_written_attention_is_found_as_heads():
    """qkv Linear -> reshape [B, N, 3, heads, head_dim] -> matmul -> softmax -> matmul -> proj: one group per block
    whose channels are whole heads of q, k and v (three members on qkv.weight, offsets 0, C, 2C) and proj's inputs."""
    _, g = _graph("deit_like")
    heads = [grp for grp in g.channel_groups() if "heads" in grp.roles]
    assert len(heads) == 2 and all(grp.size == 4 and not grp.frozen for grp in heads)
    qkv = sorted((m.offset, m.repeat) for m in heads[0].members if m.layer == "blocks.0.attn.qkv" and m.param == "weight")
    assert qkv == [(0, 8), (32, 8), (64, 8)]
    proj = [m for m in heads[0].members if m.layer == "blocks.0.attn.proj" and m.param == "weight"]
    assert [(m.axis, m.offset, m.repeat, m.kind) for m in proj] == [(0, 0, 8, "in")]


def test_single_head_attention_prunes_head_dim():
    """With one head the split axis has size 1: q/k/v keep per-channel groups, marked as the head width."""
    _, g = _graph("pvt_v2_like")
    grp = next(grp for grp in g.channel_groups() if any(m.layer == "blocks.0.attn.q" and m.axis == 1 for m in grp.members))
    assert grp.roles == ("head_dim",) and grp.size == 16 and not grp.frozen


def test_concat_feeding_add_is_aligned():
    """GhostNet: concat([primary, cheap]) + a conv shortcut: the shortcut conv is cut in halves and tied to both."""
    _, g = _graph("ghostnet_like")
    grp = next(grp for grp in g.channel_groups() if any(m.layer == "blocks.1.shortcut_conv.conv" and m.axis == 0 for m in grp.members))
    assert not grp.frozen
    offs = sorted(m.offset for m in grp.members if m.layer == "blocks.1.shortcut_conv.conv" and m.axis == 0)
    assert offs == [0, 12]


def test_fixed_reshape_next_to_inferred_dim_is_frozen():
    """reshape([B, C, -1]) with C spelled out would silently re-cut the data after pruning: frozen, named."""

    class Net(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 8, 3, padding=1)
            self.fc = paddle.nn.Linear(8, 4)

        def forward(self, x):
            y = self.conv(x).reshape([1, 8, -1]).mean(axis=-1)
            return self.fc(y)

    g = slim_core.trace(Net(), input_spec=[[1, 3, 8, 8]])
    grp = next(grp for grp in g.channel_groups() if any(m.layer == "conv" and m.axis == 0 for m in grp.members))
    assert grp.frozen and "hard-codes 8 channels next to an inferred dim" in grp.reason


def test_functional_channel_shuffle_is_a_fixed_permutation():
    """F.channel_shuffle(x, 2) after a concat of two convs: the convs are tied and the shuffled
    consumer reads each tied channel at two consecutive positions."""

    class Net(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.a = paddle.nn.Conv2D(3, 4, 1)
            self.b = paddle.nn.Conv2D(3, 4, 1)
            self.c = paddle.nn.Conv2D(8, 6, 1)

        def forward(self, x):
            y = paddle.concat([self.a(x), self.b(x)], axis=1)
            return self.c(paddle.nn.functional.channel_shuffle(y, 2)).mean(axis=[2, 3])

    g = slim_core.trace(Net(), input_spec=[[1, 3, 8, 8]])
    grp = next(grp for grp in g.channel_groups() if any(m.layer == "a" and m.axis == 0 for m in grp.members))
    assert not grp.frozen and grp.size == 4
    assert {(m.layer, m.axis, m.offset, m.repeat) for m in grp.members if m.param == "weight"} == {
        ("a", 0, 0, 1),
        ("b", 0, 0, 1),
        ("c", 1, 0, 2),
    }
