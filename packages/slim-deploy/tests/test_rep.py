from __future__ import annotations

import numpy as np
import paddle
import pytest

from slim_core import ConfigError
from slim_deploy import REP_BLOCKS, RepConfig, merge, merge_, rep_blocks, reparameterize

nn = paddle.nn


class VGGish(nn.Layer):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2D(3, 8, 3, padding=1, bias_attr=False),
            nn.BatchNorm2D(8),
            nn.ReLU(),
            nn.Conv2D(8, 8, 3, padding=1),
            nn.BatchNorm2D(8),
            nn.ReLU(),
            nn.Conv2D(8, 16, 3, stride=2, padding=1, bias_attr=False),
            nn.BatchNorm2D(16),
            nn.ReLU(),
        )
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.features(x).mean(axis=[2, 3]))


ARCHS = {
    "vggish": (VGGish, 3),
    "resnet18": (lambda: paddle.vision.models.resnet18(num_classes=10), 16),
    "mobilenet_v2": (lambda: paddle.vision.models.mobilenet_v2(scale=0.5, num_classes=10), 18),
}


def _perturb(model, seed):
    """Give every branch non-trivial weights and statistics, as training would."""
    rng = np.random.default_rng(seed)
    for sub in model.sublayers():
        if isinstance(sub, nn.BatchNorm2D):
            c = sub._mean.shape[0]
            sub._mean.set_value(rng.normal(0, 0.1, c).astype("float32"))
            sub._variance.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))
            sub.weight.set_value(rng.uniform(0.2, 0.6, c).astype("float32"))
            sub.bias.set_value(rng.normal(0, 0.1, c).astype("float32"))
        elif isinstance(sub, nn.Conv2D):
            fan_in = int(np.prod(sub.weight.shape[1:]))
            sub.weight.set_value((rng.standard_normal(sub.weight.shape) / np.sqrt(fan_in)).astype("float32"))


@pytest.mark.parametrize("block", ["repvgg", "acb", "dbb"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_preserve_then_merge_equal(arch, block):
    build, n_3x3 = ARCHS[arch]
    paddle.seed(0)
    model = build()
    model.eval()
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal([2, 3, 32, 32]).astype("float32"))
    ref = model(x).numpy()
    rep = reparameterize(model, RepConfig(block=block), [None, 3, 32, 32])
    blocks = rep_blocks(rep)
    # DBB supports groups=1 only: MobileNetV2's depthwise 3x3 convs stay plain
    assert len(blocks) == (1 if (arch == "mobilenet_v2" and block == "dbb") else n_3x3)
    assert not rep_blocks(model)
    np.testing.assert_allclose(rep(x).numpy(), ref, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(ref).max()))
    _perturb(rep, seed=2)
    rep.eval()
    trained = rep(x).numpy()
    merged = merge(rep)
    assert not rep_blocks(merged) and rep_blocks(rep)
    out = merged(x).numpy()
    assert np.abs(out - trained).max() <= 1e-4 * max(1.0, np.abs(trained).max())


@pytest.mark.parametrize("block", ["repvgg", "acb", "dbb"])
def test_train_steps_then_merge(block):
    paddle.seed(0)
    rep = reparameterize(VGGish(), RepConfig(block=block, init="fresh"), [None, 3, 16, 16])
    rep.train()
    opt = paddle.optimizer.SGD(0.05, parameters=rep.parameters())
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = paddle.to_tensor(rng.standard_normal([4, 3, 16, 16]).astype("float32"))
        loss = rep(x).square().mean()
        loss.backward()
        opt.step()
        opt.clear_grad()
    rep.eval()
    x = paddle.to_tensor(rng.standard_normal([3, 3, 16, 16]).astype("float32"))
    before = rep(x).numpy()
    n = merge_(rep)
    assert n == 3 and all(isinstance(rep.features[i], nn.Conv2D) for i in (0, 3, 6))
    np.testing.assert_allclose(rep(x).numpy(), before, rtol=1e-4, atol=1e-5)


def test_rep_config_validation_and_yaml():
    cfg = RepConfig(block="acb", kernel_sizes=(3, 5))
    assert RepConfig.from_yaml(cfg.to_yaml()) == cfg
    with pytest.raises(ConfigError, match="unknown re-parameterization block 'acnet'"):
        RepConfig(block="acnet")
    with pytest.raises(ConfigError, match="odd"):
        RepConfig(kernel_sizes=(2,))
    with pytest.raises(ConfigError, match="init"):
        RepConfig(init="zero")
    assert set(REP_BLOCKS.names()) >= {"repvgg", "acb", "dbb"}


def test_nothing_to_replace_is_an_error():
    model = nn.Sequential(nn.Conv2D(3, 4, 1), nn.BatchNorm2D(4))
    with pytest.raises(ConfigError, match="found nothing to replace.*kernel"):
        reparameterize(model, RepConfig(), [None, 3, 8, 8])
    with pytest.raises(ConfigError, match="skipped by config"):
        reparameterize(VGGish(), RepConfig(skip=("features.0", "features.3", "features.6")), [None, 3, 8, 8])
