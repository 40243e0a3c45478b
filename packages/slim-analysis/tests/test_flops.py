"""FLOPs (1 FLOP = 1 MAC) against hand-computed values, paddle.flops' rules, and the whole zoo."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from _analysis_testing import zoo
from paddle.hapi import dynamic_flops as paddle_rules

import slim_analysis as sa
import slim_core
from slim_core.graph.zoo import VISION_MODELS


def test_small_cnn_hand_computed(small_cnn):
    # conv1: 4x8x8 outputs x (3*3*3) MACs + 4x8x8 bias adds
    conv1 = 4 * 8 * 8 * 27 + 4 * 8 * 8
    bn = 2 * 4 * 8 * 8
    pool = 4 * 4 * 4 * (2 * 2)  # max pool: one op per window element
    conv2 = 6 * 4 * 4 * 4
    gap = 6 * (16 + 1)  # adaptive average: 16 adds + 1 division per output
    fc = 5 * 6 + 5
    assert sa.flops(small_cnn, [1, 3, 8, 8]) == conv1 + bn + pool + conv2 + gap + fc
    assert sa.flops(small_cnn, [2, 3, 8, 8]) == 2 * (conv1 + bn + pool + conv2 + gap + fc)  # the batch counts


@pytest.mark.parametrize(
    ("groups", "expected"),
    [(1, 8 * 6 * 6 * 8 * 9), (2, 8 * 6 * 6 * 4 * 9), (8, 8 * 6 * 6 * 1 * 9)],
    ids=["dense", "groups2", "depthwise"],
)
def test_grouped_conv(groups, expected):
    net = paddle.nn.Conv2D(8, 8, 3, groups=groups, bias_attr=False)
    assert sa.flops(net, [1, 8, 8, 8]) == expected


def test_attention_matmuls_are_counted():
    paddle.seed(0)
    d, h, L, ff = 16, 2, 5, 32
    enc = paddle.nn.TransformerEncoderLayer(d, h, ff, dropout=0.0)
    got = sa.flops(enc, [1, L, d])
    proj = 4 * (L * d * d + L * d)  # q, k, v, out projections with bias
    attn = 2 * h * L * L * (d // h)  # q k^T and weights @ v
    ffn = L * d * ff + L * ff + L * ff * d + L * d
    softmax = 3 * h * L * L
    scale = L * d  # q scaling
    norms = 2 * (2 * L * d)
    residual = 2 * L * d
    assert got == proj + attn + ffn + softmax + scale + norms + residual


def _paddle_reference(model, shape):
    """paddle.flops' own counting rules (its table printing crashes on NumPy 2, so call the rules directly)."""
    model.eval()
    hooks = []
    for m in model.sublayers():
        fn = paddle_rules.register_hooks.get(type(m))
        if list(m.children()) or fn is None:
            continue
        m.total_ops = 0
        hooks.append(m.register_forward_post_hook(lambda mm, x, y, fn=fn: fn(mm, x, y)))
    with paddle.no_grad():
        model(paddle.randn(shape))
    for h in hooks:
        h.remove()
    return sum(int(getattr(m, "total_ops", 0)) for m in model.sublayers() if not list(m.children()))


def test_matches_paddle_flops_on_plain_cnn():
    net = paddle.nn.Sequential(
        paddle.nn.Conv2D(3, 8, 3, padding=1),
        paddle.nn.BatchNorm2D(8),
        paddle.nn.ReLU(),
        paddle.nn.AdaptiveAvgPool2D(1),
        paddle.nn.Flatten(),
        paddle.nn.Linear(8, 4, bias_attr=False),
    )
    assert sa.flops(net, [1, 3, 16, 16]) == _paddle_reference(net, [1, 3, 16, 16])


def test_resnet18_difference_to_paddle_flops_is_documented():
    """Ours = paddle.flops + max pool windows + residual adds + the fc bias (paddle.flops counts those as 0)."""
    model, g, shape = zoo("resnet18")
    ours = sa.flops(g)
    ref = _paddle_reference(model, shape)
    maxpool = 64 * 16 * 16 * 9
    adds = sum(int(np.prod(n.output.shape)) for n in g.nodes_of_type("pd_op.add") if n.layer is None)
    fc_bias = 10
    assert ours - ref == maxpool + adds + fc_bias
    assert abs(ours / ref - 1) < 0.01


ZOO = list(VISION_MODELS)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_flops_params_and_summary(name):
    model, g, shape = zoo(name)
    f = sa.flops(g)
    conv_linear = sum(sa.node_flops(n) for n in g.nodes_of_type("pd_op.conv2d", "pd_op.depthwise_conv2d", "pd_op.matmul"))
    assert 0.8 * f < conv_linear <= f  # the MACs dominate, the elementwise rest is small
    assert sa.unknown_ops(g) == {}
    s = sa.summary(model, shape)
    assert s.total_flops == f and s.total_params == sa.params(model)
    names = dict(model.named_sublayers())
    assert all(r.name in names for r in s.rows if r.type != "ops")
    assert abs(sum(r.share for r in s.rows) - 1) < 1e-6
    md = s.to_markdown()
    assert md.count("\n|") == len(s.rows) + 1 and "1 FLOP = 1 MAC" in md


def test_params_counts_shared_parameter_once():
    lin = paddle.nn.Linear(4, 3)
    net = paddle.nn.Sequential(lin, paddle.nn.ReLU())
    net.add_sublayer("again", lin)
    assert sa.params(paddle.nn.Linear(4, 3)) == 15
    assert sa.params(net) == 15
    bn = paddle.nn.BatchNorm2D(4)
    assert sa.params(bn) == 16 and sa.params(bn, trainable_only=True) == 8


def test_inference_model_matches_layer(saved_small_cnn, small_cnn):
    assert sa.flops(saved_small_cnn, [1, 3, 8, 8]) == sa.flops(small_cnn, [1, 3, 8, 8])
    assert sa.flops(saved_small_cnn, [4, 3, 8, 8]) == sa.flops(small_cnn, [4, 3, 8, 8])  # dynamic batch scales
    assert sa.params(saved_small_cnn) == sa.params(small_cnn)
    rows = sa.summary(saved_small_cnn, [1, 3, 8, 8]).rows
    assert rows[0].flops == 4 * 8 * 8 * 27 + 4 * 8 * 8


def test_graph_input_is_accepted(small_cnn):
    g = slim_core.trace(small_cnn, input_spec=[[1, 3, 8, 8]])
    assert sa.flops(g) == sa.flops(small_cnn, [1, 3, 8, 8])


def test_wrong_input_shape_names_expected_shape(small_cnn, saved_small_cnn):
    with pytest.raises(slim_core.DataError, match=r"expected shape \[N, 3, H, W\]"):
        sa.flops(small_cnn, [1, 1, 8, 8])
    with pytest.raises(slim_core.DataError, match=r"expected shape \[-1, 3, 8, 8\]"):
        sa.flops(saved_small_cnn, [1, 3, 9, 9])
    with pytest.raises(slim_core.DataError, match="input_shape"):
        sa.flops(small_cnn)
    with pytest.raises(slim_core.DataError, match="non-positive"):
        sa.flops(small_cnn, [0, 3, 8, 8])


def test_summary_to_dict_is_json_ready(small_cnn):
    import json

    d = sa.summary(small_cnn, [1, 3, 8, 8]).to_dict()
    back = json.loads(json.dumps(d))
    assert back["rows"][0]["name"] == "conv1" and back["flops_definition"].startswith("1 FLOP")
