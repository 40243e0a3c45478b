import numpy as np
import paddle
import pytest
from paddle import nn

from slim_core import ConfigError, ExportError
from slim_nas import (
    OFA,
    OFAConfig,
    OFAMobileNetV2,
    OFAResNet,
    SuperBatchNorm2D,
    SuperConv2D,
    SuperLinear,
    recalibrate_bn,
    to_supernet,
    uniform_config,
)

TINY = {
    "mobilenetv2": lambda: OFAMobileNetV2(
        10,
        1,
        8,
        stages=((8, 1, 1), (16, 2, 2)),
        stem_channels=8,
        head_channels=32,
        kernel_choices=(3, 5),
        expand_choices=(2, 3),
        width_choices=(0.5, 1.0),
    ),
    "resnet": lambda: OFAResNet(10, 1, 8, stages=((8, 2, 1), (16, 2, 2)), stem_channels=8, head_channels=32, kernel_choices=(3, 5)),
}


def _warm_up_bn(net, x):
    """Give the BN statistics non-trivial values so the comparison checks them too."""
    net.train()
    with paddle.no_grad():
        for seed in range(3):
            net.set_config(net.space().sample(seed=seed))
            net(x)
    net.eval()


@pytest.mark.parametrize("arch", list(TINY))
def test_supernet_slicing_equals_the_exported_subnet(arch):
    net = TINY[arch]()
    x = paddle.randn([4, 1, 8, 8])
    _warm_up_bn(net, x)
    space = net.space()
    for cfg in [space.largest(), space.smallest(), space.sample(seed=3), space.sample(seed=4)]:
        net.set_config(cfg)
        sliced = net(x).numpy()
        sub = net.export(cfg)
        assert not any(isinstance(m, (SuperConv2D, SuperBatchNorm2D, SuperLinear)) for m in sub.sublayers())
        np.testing.assert_allclose(sub(x).numpy(), sliced, rtol=1e-5, atol=1e-5)
    # the smallest subnet is really smaller
    n_small = sum(int(np.prod(p.shape)) for p in net.export(space.smallest()).parameters())
    n_large = sum(int(np.prod(p.shape)) for p in net.export(space.largest()).parameters())
    assert n_small < n_large


def test_super_layers_match_independently_built_layers_with_copied_weights():
    conv = SuperConv2D(8, 16, 5, stride=2)
    conv.active_out, conv.active_kernel = 12, 3
    ref = nn.Conv2D(6, 12, 3, stride=2, padding=1, bias_attr=False)
    ref.weight.set_value(conv.weight[:12, :6, 1:4, 1:4])
    x = paddle.randn([2, 6, 9, 9])
    np.testing.assert_allclose(conv(x).numpy(), ref(x).numpy(), rtol=1e-5, atol=1e-6)

    dw = SuperConv2D(16, 16, 7, depthwise=True)
    dw.active_kernel = 5
    ref_dw = nn.Conv2D(10, 10, 5, padding=2, groups=10, bias_attr=False)
    ref_dw.weight.set_value(dw.weight[:10, :, 1:6, 1:6])
    x = paddle.randn([2, 10, 6, 6])
    np.testing.assert_allclose(dw(x).numpy(), ref_dw(x).numpy(), rtol=1e-5, atol=1e-6)

    lin = SuperLinear(32, 20)
    lin.active_out = 7
    ref_lin = nn.Linear(24, 7)
    ref_lin.weight.set_value(lin.weight[:24, :7])
    ref_lin.bias.set_value(lin.bias[:7])
    x = paddle.randn([3, 24])
    np.testing.assert_allclose(lin(x).numpy(), ref_lin(x).numpy(), rtol=1e-5, atol=1e-6)


def test_super_batchnorm_updates_only_the_active_channels():
    bn = SuperBatchNorm2D(8)
    bn.train()
    bn(paddle.randn([16, 5, 4, 4]) * 3 + 2)
    mean = bn._mean.numpy()
    assert np.all(mean[:5] > 0.05) and np.all(mean[5:] == 0)
    ref = nn.BatchNorm2D(5)
    ref.train()
    x = paddle.randn([16, 5, 4, 4])
    bn2 = SuperBatchNorm2D(8)
    bn2.train()
    np.testing.assert_allclose(bn2(x).numpy(), ref(x).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn2._variance.numpy()[:5], ref._variance.numpy(), rtol=1e-4)


@pytest.mark.parametrize("arch", list(TINY))
def test_exported_subnet_runs_trains_and_saves(arch, tmp_path):
    net = TINY[arch]()
    sub = net.export(net.space().sample(seed=1))
    x = paddle.randn([8, 1, 8, 8])
    y = paddle.randint(0, 10, [8])
    sub.train()
    opt = paddle.optimizer.Adam(learning_rate=1e-2, parameters=sub.parameters())
    losses = []
    for _ in range(5):
        loss = paddle.nn.functional.cross_entropy(sub(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    sub.eval()
    path = str(tmp_path / "subnet")
    paddle.jit.save(sub, path, input_spec=[paddle.static.InputSpec([None, 1, 8, 8], "float32", "x")])
    loaded = paddle.jit.load(path)
    np.testing.assert_allclose(loaded(x).numpy(), sub(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", list(TINY))
def test_progressive_shrinking_runs_and_learns(arch, digits):
    batches, xt, yt = digits
    net = TINY[arch]()
    ofa = OFA(net, OFAConfig(steps_per_phase=6, subnets_per_step=1, learning_rate=5e-3))
    history = ofa.train(batches)
    assert [h["phase"] for h in history] == ["largest", "kernel", "depth", "width"]
    assert all(np.isfinite(h["largest_loss"]) for h in history)
    assert history[-1]["largest_loss"] < 2.2  # below chance level (ln 10 = 2.30)
    assert net.config == net.space().largest()  # training leaves the largest subnet active
    sub = ofa.export(net.space().smallest(), calib_data=batches, n_calib_batches=2)
    assert sub(paddle.to_tensor(xt[:4])).shape == [4, 10]


def test_phase_sampling_keeps_later_dimensions_at_their_maximum():
    net = TINY["mobilenetv2"]()
    ofa = OFA(net, OFAConfig(steps_per_phase=1))
    largest = net.space().largest()
    for seed in range(10):
        cfg = ofa.sample("kernel", np.random.default_rng(seed))
        assert all(v == largest[k] for k, v in cfg.items() if not k.endswith(".kernel"))
        cfg = ofa.sample("depth", np.random.default_rng(seed))
        assert all(v == largest[k] for k, v in cfg.items() if k.endswith((".width", ".expand")))


def test_recalibrate_bn_restores_accuracy_of_a_shared_bn_subnet(digits):
    batches, _, _ = digits
    net = TINY["resnet"]()
    sub = net.export(uniform_config(net.space(), 0.0))
    before = [bn._mean.numpy().copy() for bn in sub.sublayers() if isinstance(bn, nn.BatchNorm2D)]
    recalibrate_bn(sub, batches, n_batches=2)
    after = [bn._mean.numpy() for bn in sub.sublayers() if isinstance(bn, nn.BatchNorm2D)]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
    assert not sub.training


@pytest.mark.parametrize(
    "build, error, match",
    [
        pytest.param(lambda: OFA(nn.Linear(2, 2)), ConfigError, "needs a Supernet", id="not-a-supernet"),
        pytest.param(lambda: OFAConfig(phases=("kernel", "shrink")), ConfigError, "phases", id="bad-phase"),
        pytest.param(lambda: OFAConfig(phases=()), ConfigError, "empty", id="no-phase"),
        pytest.param(lambda: OFAResNet(stages=()), ConfigError, "at least one stage", id="no-stage"),
        pytest.param(lambda: OFAResNet(stages=((16, 0, 1),)), ConfigError, "positive", id="zero-depth"),
        pytest.param(lambda: SuperConv2D(4, 4, 4), ConfigError, "odd kernel", id="even-kernel"),
        pytest.param(lambda: SuperConv2D(4, 4, 3).to_static(), ExportError, "not run yet", id="export-before-forward"),
    ],
)
def test_bad_input(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_set_config_rejects_configs_outside_the_space():
    net = TINY["resnet"]()
    cfg = net.space().largest()
    cfg["stage0.depth"] = 7
    with pytest.raises(ConfigError, match="stage0.depth=7"):
        net.set_config(cfg)
    with pytest.raises(ConfigError, match="missing"):
        net.export({"stage0.depth": 1})


def _tiny_cnn():
    from slim_core import demo

    return demo.build_tiny_cnn(width=8), [1, 1, 8, 8]


def _small_mobilenet():
    return paddle.vision.models.mobilenet_v2(num_classes=10, scale=0.25), [1, 3, 32, 32]


def _kernel_net():
    # a 5x5 and a depthwise 5x5 conv: elastic kernels besides widths
    model = nn.Sequential(
        nn.Conv2D(1, 8, 5, padding=2),
        nn.BatchNorm2D(8),
        nn.ReLU(),
        nn.Conv2D(8, 8, 5, padding=2, groups=8),
        nn.BatchNorm2D(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2D(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    return model, [1, 1, 8, 8]


@pytest.mark.parametrize("build", [_tiny_cnn, _small_mobilenet, _kernel_net], ids=["tiny-cnn", "mobilenet_v2", "kernel-net"])
def test_to_supernet_slices_like_the_exported_subnet(build):
    model, shape = build()
    model.eval()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    net = to_supernet(model, shape, kernel_choices=(3, 5), width_choices=(0.5, 1.0))
    space = net.space()
    assert any(k.endswith(".width") for k in space.names)
    x = paddle.randn([2, *shape[1:]])
    net.eval()
    np.testing.assert_allclose(net(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-5)  # the largest subnet is the model
    for cfg in (space.smallest(), space.sample(seed=0)):
        net.set_config(cfg)
        sliced = net(x).numpy()
        sub = net.export(cfg)
        assert not any(isinstance(m, (SuperConv2D, SuperBatchNorm2D, SuperLinear)) for m in sub.sublayers())
        np.testing.assert_allclose(sub(x).numpy(), sliced, rtol=1e-4, atol=1e-5)
    assert sum(int(np.prod(p.shape)) for p in net.export(space.smallest()).parameters()) < sum(
        int(np.prod(p.shape)) for p in model.parameters()
    )
    for k, v in model.state_dict().items():  # the input model is untouched
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_kernel_keys_only_for_convs_that_can_shrink():
    model, shape = _kernel_net()
    net = to_supernet(model, shape, kernel_choices=(3, 5, 7), width_choices=None)
    assert sorted(net.space().names) == ["0.kernel", "3.kernel"]
    assert net.space()["0.kernel"].values() == [3, 5]
    with pytest.raises(ConfigError, match="nothing in this model can be made elastic"):
        to_supernet(nn.Sequential(nn.Conv2D(1, 4, 3, padding=1)), [1, 1, 8, 8], width_choices=None)


def test_ofa_trains_a_converted_model(digits):
    batches, _, _ = digits
    model, shape = _tiny_cnn()
    ofa = OFA(to_supernet(model, shape), OFAConfig(phases=("largest", "width"), steps_per_phase=4, subnets_per_step=1))
    history = ofa.train(batches)
    assert np.isfinite(history[-1]["subnet_loss"])
    assert ofa.export(ofa.space().smallest())(paddle.randn([2, 1, 8, 8])).shape == [2, 10]
