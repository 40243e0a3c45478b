"""ModelGraph: structure, parameter ownership and channel groups."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
import pytest
from _graph_testing import prune_groups, zoo_graph

import slim_core
from slim_core.graph import ChannelGroup, ChannelMember


class DenseBlockNet(paddle.nn.Layer):
    """DenseNet-style: each conv sees the concat of all previous feature maps."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = paddle.nn.Conv2D(3, 8, 3, padding=1)
        self.c1 = paddle.nn.Conv2D(8, 4, 3, padding=1)
        self.c2 = paddle.nn.Conv2D(12, 4, 3, padding=1)
        self.bn = paddle.nn.BatchNorm2D(16)
        self.fc = paddle.nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = paddle.concat([x, self.c1(x)], axis=1)
        x = paddle.concat([x, self.c2(x)], axis=1)
        x = F.relu(self.bn(x))
        return self.fc(paddle.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _groups_of(g, layer, param="weight", axis=0):
    return [grp for grp in g.channel_groups() if any(m.layer == layer and m.param == param and m.axis == axis for m in grp.members)]


def test_resnet18_structure_and_ownership():
    _, g, _ = zoo_graph("resnet18")
    assert g.op_types()["pd_op.conv2d"] == 20
    conv = g.layer_nodes("layer1.0.conv1")
    assert [n.type for n in conv] == ["pd_op.conv2d"]
    assert conv[0].params == {"filter": "layer1.0.conv1.weight"}
    assert conv[0].inputs[0].producer is not None and conv[0].output.consumers
    assert conv[0].output.shape == (1, 64, 16, 16)
    assert g.params["fc.bias"].layer == "fc" and g.params["fc.bias"].attr == "bias"
    assert {n.layer for n in g.layer_nodes("fc")} == {"fc"}
    assert len(g.layer_nodes("fc")) == 2  # matmul + bias add


def test_resnet18_residual_ties_downsample_and_blocks():
    _, g, _ = zoo_graph("resnet18")
    (grp,) = _groups_of(g, "layer2.0.downsample.0")
    layers = set(grp.layers)
    assert {"layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2", "layer3.0.conv1", "layer3.0.downsample.0"} <= layers
    assert not grp.frozen and grp.size == 128
    ins = {m.layer for m in grp.in_members()}
    assert ins == {"layer2.1.conv1", "layer3.0.conv1", "layer3.0.downsample.0"}
    (inner,) = _groups_of(g, "layer1.0.conv1")
    assert sorted((m.layer, m.param, m.kind) for m in inner.members) == [
        ("layer1.0.bn1", "_mean", "out"),
        ("layer1.0.bn1", "_variance", "out"),
        ("layer1.0.bn1", "bias", "out"),
        ("layer1.0.bn1", "weight", "out"),
        ("layer1.0.conv1", "weight", "out"),
        ("layer1.0.conv2", "weight", "in"),
    ]


def test_inputs_and_outputs_are_frozen():
    _, g, _ = zoo_graph("resnet18")
    (first,) = [grp for grp in g.channel_groups() if any(m.layer == "conv1" and m.axis == 1 for m in grp.members)]
    assert first.frozen and "model input" in first.reason
    (last,) = _groups_of(g, "fc", axis=1)
    assert last.frozen and "model output" in last.reason


def test_mobilenet_v2_depthwise_follows_its_input():
    _, g, _ = zoo_graph("mobilenet_v2")
    (grp,) = _groups_of(g, "features.2.conv.0.0")  # expand conv of the first inverted residual with expansion
    kinds = {(m.layer, m.kind) for m in grp.members}
    assert ("features.2.conv.1.0", "out") in kinds  # the depthwise conv
    assert ("features.2.conv.2", "in") in kinds  # the projection conv
    assert not grp.frozen


def test_dense_concat_offsets():
    paddle.seed(0)
    net = DenseBlockNet()
    g = slim_core.trace(net, input_spec=[[1, 3, 16, 16]])
    (stem,) = _groups_of(g, "stem")
    (c1,) = _groups_of(g, "c1")
    (c2,) = _groups_of(g, "c2")

    def mem(grp, layer, param="weight"):
        return [(m.axis, m.offset, m.repeat, m.kind) for m in grp.members if m.layer == layer and m.param == param]

    assert mem(stem, "c2") == [(1, 0, 1, "in")]
    assert mem(c1, "c2") == [(1, 8, 1, "in")]
    assert mem(stem, "bn") == [(0, 0, 1, "out")] and mem(c1, "bn") == [(0, 8, 1, "out")] and mem(c2, "bn") == [(0, 12, 1, "out")]
    assert mem(c2, "fc") == [(0, 12, 1, "in")]
    assert sorted(mem(stem, "stem", "bias")) == [(0, 0, 1, "out")]


def test_indices_expand_offset_and_repeat():
    m = ChannelMember("fc", "weight", 0, offset=6, repeat=3, kind="in")
    grp = ChannelGroup(0, 4, (m,), False, None)
    assert grp.indices(m, [0, 2]) == [6, 7, 8, 12, 13, 14]
    with pytest.raises(IndexError):
        grp.indices(m, [4])


def test_flatten_before_linear_gives_repeat():
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 6, 3), paddle.nn.ReLU(), paddle.nn.Flatten(), paddle.nn.Linear(6 * 4 * 4, 7))
    g = slim_core.trace(net, input_spec=[[2, 3, 6, 6]])
    (grp,) = _groups_of(g, "0")
    assert [(m.axis, m.offset, m.repeat) for m in grp.in_members()] == [(0, 0, 16)]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet121"])
def test_pruning_every_group_keeps_forward_running(name):
    paddle.seed(0)
    model = getattr(paddle.vision.models, name)(num_classes=10)
    _, g, shape = zoo_graph(name)
    model.eval()
    x = paddle.randn(shape)
    assert prune_groups(model, g.channel_groups()) > 5
    assert model(x).shape == [1, 10]


def test_dense_net_pruned_forward():
    paddle.seed(0)
    net = DenseBlockNet()
    net.eval()
    g = slim_core.trace(net, input_spec=[[1, 3, 16, 16]])
    assert prune_groups(net, g.channel_groups()) == 3
    assert net.bn.weight.shape == [16 - 2 - 1 - 1]
    assert net(paddle.randn([1, 3, 16, 16])).shape == [1, 5]


def test_trace_leaves_model_untouched():
    net = DenseBlockNet()
    net.train()
    fwd = net.forward
    slim_core.trace(net, input_spec=[[1, 3, 16, 16]])
    assert net.training and net.forward == fwd


class FunctionalNet(paddle.nn.Layer):
    """Functional ops, a root-level parameter, and one conv applied twice (shared parameter)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = paddle.nn.Conv2D(3, 8, 3, padding=1)
        self.shared = paddle.nn.Conv2D(8, 8, 3, padding=1)
        self.side = paddle.nn.Conv2D(8, 4, 1)
        self.w = self.create_parameter([12, 6])
        self.b = self.create_parameter([6], is_bias=True)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = self.shared(x)
        y = paddle.add(self.shared(F.relu(y)), x)
        z = paddle.concat([y, self.side(y)], axis=1)
        z = paddle.mean(z, axis=[2, 3])
        return F.linear(z, self.w, self.b)


def test_functional_ops_and_shared_parameter():
    paddle.seed(0)
    net = FunctionalNet()
    net.eval()
    g = slim_core.trace(net, input_spec=[[1, 3, 8, 8]])
    assert len(g.layer_nodes("shared")) >= 2  # the shared conv appears once per call
    (grp,) = _groups_of(g, "shared")
    # the shared conv's input and output channels, the stem and the residual are one group
    kinds = {(m.layer, m.axis, m.kind) for m in grp.members}
    assert {("stem", 0, "out"), ("shared", 0, "out"), ("shared", 1, "in"), ("side", 1, "in"), ("", 0, "in")} <= kinds
    assert [(m.offset, m.repeat) for m in grp.members if m.layer == "" and m.param == "w"] == [(0, 1)]
    (side,) = _groups_of(g, "side")
    assert [(m.offset, m.axis) for m in side.members if m.param == "w"] == [(8, 0)]
    assert prune_groups(net, g.channel_groups()) == 2
    assert net(paddle.randn([1, 3, 8, 8])).shape == [1, 6]


def test_transformer_encoder_heads_and_ffn():
    paddle.seed(0)
    enc = paddle.nn.TransformerEncoder(paddle.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0), 2)
    enc.eval()
    g = slim_core.trace(enc, input_spec=[[2, 8, 32]])
    groups = g.channel_groups()
    (heads,) = [grp for grp in groups if any(m.layer == "layers.0.self_attn.q_proj" and m.axis == 1 for m in grp.members)]
    assert heads.size == 4 and not heads.frozen  # one channel per head
    assert {(m.layer.rsplit(".", 1)[-1], m.repeat) for m in heads.members} == {("q_proj", 8), ("k_proj", 8), ("v_proj", 8), ("out_proj", 8)}
    (ffn,) = _groups_of(g, "layers.1.linear1", axis=1)
    assert ffn.size == 64 and not ffn.frozen
    (stream,) = _groups_of(g, "layers.0.norm1")
    assert stream.frozen and "model input" in stream.reason  # the residual stream is the model's input width
    assert prune_groups(enc, groups) == 4
    for layer in enc.layers:  # a pruner updates num_heads with the heads
        layer.self_attn.num_heads = layer.self_attn.q_proj.weight.shape[1] // layer.self_attn.head_dim
    assert enc(paddle.randn([2, 8, 32])).shape == [2, 8, 32]


class CumsumNet(paddle.nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.a = paddle.nn.Conv2D(3, 8, 3)
        self.b = paddle.nn.Conv2D(8, 8, 3)
        self.c = paddle.nn.Conv2D(8, 4, 1)

    def forward(self, x):
        return self.c(self.b(paddle.cumsum(self.a(x), axis=1)))


def test_op_without_rule_freezes_neighbours_and_names_the_op():
    g = slim_core.trace(CumsumNet(), input_spec=[[1, 3, 12, 12]])
    (grp,) = _groups_of(g, "a")
    assert grp.frozen and "pd_op.cumsum" in grp.reason
    (after,) = _groups_of(g, "b")
    assert not after.frozen  # channels born after the unknown op are still prunable
    with pytest.raises(slim_core.UnsupportedOpError, match="pd_op.cumsum"):
        g.channel_groups(strict=True)


def test_user_rule_unfreezes_an_op():
    from slim_core.graph import CHANNEL_RULES, register_channel_rule

    @register_channel_rule("pd_op.cumsum")
    def _cumsum(node, s):  # cumsum over the channel axis mixes channels: passthrough is only valid off-axis
        s.passthrough(node)

    try:
        g = slim_core.trace(CumsumNet(), input_spec=[[1, 3, 12, 12]])
        (grp,) = _groups_of(g, "a")
        assert not grp.frozen and {m.layer for m in grp.members} == {"a", "b"}
    finally:
        CHANNEL_RULES.pop("pd_op.cumsum")


@pytest.mark.parametrize("fmt", ["pir", "legacy"])
def test_from_inference_model(tmp_path, fmt):
    import contextlib

    model, g_layer, _ = zoo_graph("resnet18")
    guard = paddle.pir_utils.OldIrGuard() if fmt == "legacy" else contextlib.nullcontext()
    with guard:
        paddle.jit.save(model, str(tmp_path / "model"), input_spec=[paddle.static.InputSpec([None, 3, 64, 64], "float32", "x")])
    g = slim_core.ModelGraph.from_inference_model(tmp_path / "model")
    assert g.source == "inference" and g.op_types()["pd_op.conv2d"] == 20
    assert g.inputs[0].shape == (-1, 3, 64, 64) and len(g.outputs) == 1
    ours = sorted((grp.size, grp.frozen, len(grp.members)) for grp in g.channel_groups())
    assert ours == sorted((grp.size, grp.frozen, len(grp.members)) for grp in g_layer.channel_groups())
    assert all(m.layer == "" for grp in g.channel_groups() for m in grp.members)


def test_wrong_input_shape_is_a_data_error():
    model, _, _ = zoo_graph("alexnet")
    with pytest.raises(slim_core.DataError, match="3 input channels"):
        slim_core.trace(model, input_spec=[[1, 4, 224, 224]])
    with pytest.raises(slim_core.DataError, match="exactly one"):
        slim_core.trace(model)
    with pytest.raises(slim_core.DataError, match="Layer"):
        slim_core.trace("not a model", input_spec=[[1, 3, 8, 8]])
