from __future__ import annotations

import numpy as np
import paddle
import pytest
from conftest import randomize_bn

from slim_core import ConfigError
from slim_deploy import fold_bn, fold_bn_

nn = paddle.nn


def _count_bn(model):
    return sum(isinstance(s, nn.layer.norm._BatchNormBase) for s in model.sublayers())


class LinearBN(nn.Layer):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8, bias_attr=False)
        self.bn1 = nn.BatchNorm1D(8)
        self.fc2 = nn.Linear(8, 4)
        self.bn2 = nn.BatchNorm1D(4)

    def forward(self, x):
        return self.bn2(self.fc2(nn.functional.relu(self.bn1(self.fc1(x)))))


class SharedConv(nn.Layer):
    """The conv output feeds the BN and a residual add: folding would change the add's input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2D(4)
        self.conv2 = nn.Conv2D(4, 4, 1, bias_attr=False)
        self.bn2 = nn.BatchNorm2D(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y + self.bn2(self.conv2(x))


CASES = {
    "resnet18": (lambda: paddle.vision.models.resnet18(num_classes=10), [None, 3, 32, 32], 0),
    "mobilenet_v2": (lambda: paddle.vision.models.mobilenet_v2(scale=0.5, num_classes=10), [None, 3, 32, 32], 0),
    "linear_bn1d": (LinearBN, [None, 6], 0),
    "shared_conv_output": (SharedConv, [None, 4, 8, 8], 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fold_equals_unfolded(name):
    build, spec, left = CASES[name]
    paddle.seed(0)
    model = build()
    randomize_bn(model)
    model.eval()
    n_bn = _count_bn(model)
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal([3] + spec[1:]).astype("float32"))
    ref = model(x).numpy()
    folded = fold_bn(model, spec)
    assert _count_bn(model) == n_bn  # the source is untouched
    assert _count_bn(folded) == left
    out = folded(x).numpy()
    assert np.abs(out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def test_fold_in_place_returns_pairs():
    model = LinearBN()
    randomize_bn(model)
    model.eval()
    x = paddle.randn([5, 6])
    ref = model(x).numpy()
    pairs = fold_bn_(model, [None, 6])
    assert [(p.linear, p.bn) for p in pairs] == [("fc1", "bn1"), ("fc2", "bn2")]
    assert isinstance(model.bn1, nn.Identity) and model.fc1.bias is not None
    np.testing.assert_allclose(model(x).numpy(), ref, rtol=1e-5, atol=1e-5)


def test_fold_bad_spec_leaves_model_untouched():
    model = LinearBN()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError):
        fold_bn_(model, [[None, 6], [None, 6]])
    assert {k: v.numpy().tolist() for k, v in model.state_dict().items()} == {k: v.tolist() for k, v in before.items()}
