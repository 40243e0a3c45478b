"""prune_ on real models: exact equivalence with a masked reference, targets, options, bad input."""

import numpy as np
import paddle
import paddle.vision.models as M
import pytest
from conftest import ConvBNNet, assert_same_state, randomize_bn, state_arrays

from slim_core import ConfigError
from slim_prune import PruneConfig, apply_plan, plan_pruning, prune_
from slim_prune.prune import PrunePlan

X32 = [1, 3, 32, 32]


def _masked_reference(model, plan: PrunePlan):
    """Zero, in the unpruned model, everything that produces the removed channels.

    Conv/linear filters and biases and norm scales/shifts of "out" members are zeroed, so the
    removed channels are exactly 0 everywhere; the consumers then ignore them. The pruned model
    must compute the same function.
    """
    subs = dict(model.named_sublayers())
    for gid, removed in plan.removed.items():
        g = plan.groups[gid]
        for m in g.members:
            if m.kind != "out" or m.param not in ("weight", "bias", "scale"):
                continue
            p = getattr(subs[m.layer], m.param)
            arr = np.array(p.numpy())
            idx = g.indices(m, removed)
            sl = [slice(None)] * arr.ndim
            sl[m.axis] = idx
            arr[tuple(sl)] = 0.0
            p.set_value(arr)


@pytest.mark.parametrize(
    "build",
    [
        lambda: ConvBNNet(),
        lambda: M.resnet18(num_classes=10),
        lambda: M.mobilenet_v2(scale=0.25, num_classes=10),
        lambda: M.squeezenet1_1(num_classes=10),
    ],
    ids=["convbn-residual-flatten", "resnet18", "mobilenetv2-depthwise", "squeezenet-concat"],
)
def test_pruned_model_equals_masked_reference(build):
    model = build()
    randomize_bn(model)
    model.eval()
    x = paddle.randn(X32)
    plan = plan_pruning(model, PruneConfig(ratio=0.4), x)
    assert plan.removed
    ref_model = build()
    ref_model.set_state_dict(model.state_dict())
    ref_model.eval()
    _masked_reference(ref_model, plan)
    apply_plan(model, plan, [x])
    np.testing.assert_allclose(model(x).numpy(), ref_model(x).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("criterion", ["l1", "l2", "fpgm", "bn_scale"])
@pytest.mark.parametrize("arch", ["convbn", "resnet18"])
def test_each_criterion_reaches_flops_target(criterion, arch):
    model = ConvBNNet(width=32) if arch == "convbn" else M.resnet18(num_classes=10)
    randomize_bn(model)
    res = prune_(model, PruneConfig(flops_ratio=0.4, criterion=criterion), paddle.randn(X32))
    # the tiny net has two groups of 32/64 channels: one channel is ~1-2% of its FLOPs
    assert res.flops_ratio == pytest.approx(0.4, rel=0.05 if arch == "resnet18" else 0.1)
    assert model(paddle.randn(X32)).shape == [1, 5 if arch == "convbn" else 10]


def test_l1_removes_the_weakest_filters():
    model = ConvBNNet()
    w = model.conv3.weight.numpy()
    w[[1, 7, 12]] *= 1e-3  # three nearly dead filters of conv3 (16 outputs)
    model.conv3.weight.set_value(w)
    res = prune_(model, PruneConfig(ratios={"conv3": 3 / 16}), paddle.randn(X32))
    assert res.removed["conv3"] == [1, 7, 12]
    assert res.channels["conv3"] == (16, 13)
    assert model.fc.weight.shape[0] == 13 * 16  # the flatten consumer lost 3 x (4x4) rows


def test_taylor_uses_gradients():
    model = ConvBNNet(width=32)
    x, y = paddle.randn([4, 3, 32, 32]), paddle.to_tensor(np.array([0, 1, 2, 3]))

    def loss_fn(m):
        return paddle.nn.functional.cross_entropy(m(x), y)

    res = prune_(model, PruneConfig(flops_ratio=0.3, criterion="taylor"), x[:1], loss_fn=loss_fn)
    assert res.flops_ratio == pytest.approx(0.3, rel=0.1)
    assert all(p.grad is None for p in model.parameters())


def test_params_target_and_uniform_ranking():
    model = M.mobilenet_v2(scale=0.5, num_classes=10)
    res = prune_(model, PruneConfig(params_ratio=0.3), paddle.randn(X32))
    assert res.params_ratio == pytest.approx(0.3, rel=0.05)
    model = M.resnet18(num_classes=10)
    res = prune_(model, PruneConfig(flops_ratio=0.3, global_ranking=False), paddle.randn(X32))
    assert res.flops_ratio == pytest.approx(0.3, abs=0.05)


def test_round_to_and_ignored_layers():
    model = M.resnet18(num_classes=10)
    res = prune_(model, PruneConfig(ratio=0.3, round_to=8, ignored_layers=["layer1", "conv1"]), paddle.randn(X32))
    for name, (_, after) in res.channels.items():
        assert after % 8 == 0, name
        assert not name.startswith("layer1.") and name != "conv1"
    assert model.layer1[0].conv1.weight.shape[0] == 64


def test_iterative_steps_call_step_fn():
    model = ConvBNNet(width=32)
    seen = []
    res = prune_(model, PruneConfig(flops_ratio=0.5, steps=3), paddle.randn(X32), step_fn=lambda m, s: seen.append(s))
    assert seen == [1, 2]
    assert res.flops_ratio == pytest.approx(0.5, rel=0.1)
    assert any(k.endswith("@3") for k in res.removed)


def test_pruned_model_trains_and_exports(tmp_path):
    model = M.mobilenet_v2(scale=0.25, num_classes=10)
    prune_(model, PruneConfig(flops_ratio=0.5), paddle.randn(X32))
    model.train()
    opt = paddle.optimizer.Momentum(learning_rate=0.01, parameters=model.parameters())
    for _ in range(2):
        loss = model(paddle.randn([2, 3, 32, 32])).mean()
        loss.backward()
        opt.step()
        opt.clear_grad()
    model.eval()
    x = paddle.randn(X32)
    paddle.jit.save(model, str(tmp_path / "m"), input_spec=[paddle.static.InputSpec([None, 3, 32, 32])])
    from slim_core import load_inference_model

    out = load_inference_model(tmp_path / "m").run([x.numpy()])[0]
    np.testing.assert_allclose(out, model(x).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "config, kwargs, match",
    [
        (lambda: PruneConfig(ratio=0.3, ignored_layers=["layer9"]), {}, "no layer named 'layer9'"),
        (lambda: PruneConfig(ratios={"conv_1": 0.5}), {}, "did you mean 'conv1'"),
        (lambda: PruneConfig(ratios={"fc": 0.5}), {}, "cannot be pruned: .*output"),
        (lambda: PruneConfig(flops_ratio=0.9, max_ratio=0.5), {}, "cannot remove 90%"),
        (lambda: PruneConfig(flops_ratio=0.5, criterion="taylor"), {}, "needs gradients"),
        (lambda: {"ratio": 0.5}, {}, "must be a PruneConfig"),
    ],
    ids=["unknown-ignored-layer", "unknown-ratio-layer", "frozen-output-layer", "unreachable-target", "taylor-no-loss", "dict-config"],
)
def test_bad_input_raises_and_leaves_model_unchanged(config, kwargs, match):
    model = M.resnet18(num_classes=10)
    before = state_arrays(model)
    with pytest.raises(ConfigError, match=match):
        prune_(model, config(), paddle.randn(X32), **kwargs)
    assert_same_state(before, model)
    assert model.conv1._out_channels == 64


def test_hard_coded_reshape_group_is_left_alone():
    class Hardcoded(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 8, 3, padding=1)
            self.conv2 = paddle.nn.Conv2D(8, 6, 3, padding=1)
            self.fc = paddle.nn.Linear(6, 4)

        def forward(self, x):
            y = paddle.nn.functional.adaptive_avg_pool2d(self.conv2(self.conv(x)), 1)
            return self.fc(paddle.reshape(y, [-1, 6]))  # 6 is a literal, like InceptionV3's 2048

    model = Hardcoded()
    res = prune_(model, PruneConfig(ratio=0.5), paddle.randn(X32))
    assert model.conv.weight.shape[0] == 4
    assert model.conv2.weight.shape[0] == 6
    assert res.flops_after < res.flops_before
