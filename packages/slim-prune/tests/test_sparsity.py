import numpy as np
import paddle
import paddle.vision.models as M
import pytest
from conftest import ConvBNNet, assert_same_state, state_arrays

from slim_core import ConfigError
from slim_prune import GMPPruner, GMPSchedule, NMConfig, SparsityConfig, check_nm, sparsify_, sparsify_nm_
from slim_prune.sparsity import nm_mask


def _train(model, opt, steps=3, shape=(4, 3, 32, 32)):
    model.train()
    for _ in range(steps):
        loss = (model(paddle.randn(list(shape))) ** 2).mean()
        loss.backward()
        opt.step()
        opt.clear_grad()


@pytest.mark.parametrize("build", [lambda: ConvBNNet(), lambda: M.mobilenet_v2(scale=0.25, num_classes=10)], ids=["convbn", "mobilenetv2"])
def test_per_layer_ratio_is_exact_and_survives_training(build):
    model = build()
    masks = sparsify_(model, SparsityConfig(ratio=0.6))
    per_layer = masks.sparsity(per_layer=True)
    for name, value in per_layer.items():
        size = masks.masks[name].size
        assert value == pytest.approx(np.floor(size * 0.6) / size, abs=1e-6), name
    opt = masks.attach(paddle.optimizer.AdamW(learning_rate=0.01, parameters=model.parameters(), weight_decay=0.1))
    _train(model, opt)
    assert masks.sparsity(per_layer=True) == pytest.approx(per_layer)
    masks.remove()
    _train(model, opt, steps=1)
    assert masks.sparsity() < min(per_layer.values())  # without masks the zeros are revived


def test_global_scope_and_threshold():
    model = ConvBNNet(width=16)
    masks = sparsify_(model, SparsityConfig(ratio=0.5, scope="global"))
    assert masks.sparsity() == pytest.approx(0.5, abs=1e-3)
    per_layer = masks.sparsity(per_layer=True)
    assert max(per_layer.values()) - min(per_layer.values()) > 0.05  # global: layers differ
    model = ConvBNNet(width=16)
    masks = sparsify_(model, SparsityConfig(threshold=0.05))
    for name, p in masks.params.items():
        w = p.numpy()
        assert np.all((w == 0) | (np.abs(w) > 0.05)), name


def test_bad_sparsity_config_leaves_model_unchanged():
    with pytest.raises(ConfigError, match="exactly one"):
        SparsityConfig(ratio=0.5, threshold=0.1)
    with pytest.raises(ConfigError, match="ratio"):
        SparsityConfig(ratio=1.0)
    model = ConvBNNet()
    before = state_arrays(model)
    with pytest.raises(ConfigError, match="no layer named 'conv9'"):
        sparsify_(model, SparsityConfig(ratio=0.5, ignored_layers=["conv9"]))
    assert_same_state(before, model)


def test_gmp_schedule_and_pruner():
    sched = GMPSchedule(final_ratio=0.8, stable_steps=2, pruning_steps=8, update_every=2)
    assert sched.ratio_at(0) == 0.0 and sched.ratio_at(1) == 0.0
    assert sched.ratio_at(10) == pytest.approx(0.8) and sched.ratio_at(50) == pytest.approx(0.8)
    values = [sched.ratio_at(s) for s in range(2, 11)]
    assert values == sorted(values)
    model = ConvBNNet()
    opt = paddle.optimizer.SGD(learning_rate=0.01, parameters=model.parameters())
    pruner = GMPPruner(model, sched, optimizer=opt)
    seen = []
    for _ in range(12):
        _train(model, opt, steps=1)
        pruner.step()
        seen.append(pruner.masks.sparsity())
    assert seen[0] == 0.0
    assert seen == sorted(seen)
    assert seen[-1] == pytest.approx(0.8, abs=0.01)


def test_nm_mask_pattern():
    w = np.random.randn(8, 16).astype("float32")
    mask = nm_mask(w, 2, 4, axis=1)
    blocks = mask.reshape(8, 4, 4)
    assert (blocks.sum(-1) == 2).all()
    kept = np.abs(w).reshape(8, 4, 4) * blocks.reshape(8, 4, 4)
    dropped = np.abs(w).reshape(8, 4, 4) * (1 - blocks.reshape(8, 4, 4))
    assert (kept.max(-1) >= dropped.max(-1)).all()
    odd = nm_mask(np.random.randn(3, 6).astype("float32"), 2, 4, axis=1)  # a partial trailing block
    assert odd.shape == (3, 6) and (odd[:, 4:].sum(-1) <= 2).all()


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: paddle.nn.Sequential(paddle.nn.Linear(16, 32), paddle.nn.ReLU(), paddle.nn.Linear(32, 8)), (4, 16)),
        (lambda: ConvBNNet(width=8), (4, 3, 32, 32)),
    ],
    ids=["mlp-linear", "cnn-conv"],
)
def test_2_4_sparsity_holds_after_fine_tuning(build, shape):
    model = build()
    assert check_nm(model)  # dense weights violate the pattern
    masks = sparsify_nm_(model, NMConfig(n=2, m=4))
    assert check_nm(model) == {}
    opt = masks.attach(paddle.optimizer.Momentum(learning_rate=0.01, parameters=model.parameters()))
    _train(model, opt, steps=3, shape=shape)
    assert check_nm(model) == {}
    assert masks.sparsity() >= 0.45  # conv1 has 3 input channels: a partial block keeps 2 of 3
