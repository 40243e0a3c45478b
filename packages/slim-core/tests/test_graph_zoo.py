"""Every paddle.vision.models architecture traces, groups consistently, and prunes to a running model."""

from __future__ import annotations

import paddle
import pytest
from _graph_testing import prune_groups, zoo_graph

from slim_core.graph.zoo import VISION_MODELS

ZOO = list(VISION_MODELS)


def _weighted_layers(model):
    for name, sub in model.named_sublayers():
        if isinstance(sub, (paddle.nn.Conv2D, paddle.nn.Linear)):
            yield name, sub


@pytest.mark.parametrize("name", ZOO)
def test_zoo_groups_tile_every_weight(name):
    """Each conv/linear weight axis is covered exactly once by the groups (no gaps, no overlaps)."""
    model, g, _ = zoo_graph(name)
    groups = g.channel_groups()
    assert groups and any(not grp.frozen for grp in groups)
    spans: dict[tuple[str, str, int], list[tuple[int, int]]] = {}
    for grp in groups:
        assert grp.frozen == (grp.reason is not None)
        for m in grp.members:
            spans.setdefault((m.layer, m.param, m.axis), []).append((m.offset, m.offset + grp.size * m.repeat))
    for lname, sub in _weighted_layers(model):
        w = sub.weight
        axes = [0, 1]
        if isinstance(sub, paddle.nn.Conv2D) and sub._groups > 1:
            axes = [0]  # depthwise/grouped: the input axis is per group
        for axis in axes:
            got = sorted(spans.get((lname, "weight", axis), []))
            assert got, f"{lname}.weight axis {axis} is in no group"
            pos = 0
            for lo, hi in got:
                assert lo == pos, f"{lname}.weight axis {axis}: gap or overlap at {lo} (expected {pos})"
                pos = hi
            assert pos == w.shape[axis], f"{lname}.weight axis {axis}: groups cover {pos} of {w.shape[axis]}"


@pytest.mark.parametrize("name", ZOO)
def test_zoo_frozen_groups_name_their_cause(name):
    _, g, _ = zoo_graph(name)
    for grp in g.channel_groups():
        if grp.frozen:
            assert grp.reason and ("model" in grp.reason or "pd_op." in grp.reason), grp.reason


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("resnext50_32x4d", "grouped conv (groups=32)"),
        ("inception_v3", "hard-codes 2048 channels"),
    ],
    ids=["resnext-grouped-conv", "inception-fixed-reshape"],
)
def test_zoo_unsafe_structures_are_frozen(name, reason):
    _, g, _ = zoo_graph(name)
    assert any(grp.frozen and reason in grp.reason for grp in g.channel_groups())


def test_zoo_channel_shuffle_is_followed():
    """ShuffleNetV2's channel shuffle (reshape, transpose, reshape) is followed as a fixed permutation.

    The shuffle ties the two halves channel by channel, so a later split of the halves can fall
    inside one tied channel: those splits (and only those) freeze, named as such.
    """
    _, g, _ = zoo_graph("shufflenet_v2_x0_25")
    groups = g.channel_groups()
    frozen = [grp.reason for grp in groups if grp.frozen and "model" not in grp.reason]
    assert not any("pd_op.reshape" in r for r in frozen)
    assert all("inside a repeated channel" in r for r in frozen)
    assert len(frozen) < 0.25 * len(groups)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "shufflenet_v2_x0_25", "squeezenet1_1", "googlenet"])
def test_zoo_pruned_forward_runs(name):
    paddle.seed(1)
    model = getattr(paddle.vision.models, name)(num_classes=10)
    _, g, shape = zoo_graph(name)
    model.eval()
    assert prune_groups(model, g.channel_groups()) > 3
    out = model(paddle.randn(shape))
    outs = out if isinstance(out, (list, tuple)) else [out]
    assert all(list(o.shape) == [1, 10] for o in outs)
