import numpy as np
import paddle
import pytest

from slim_core import set_quiet

set_quiet(True)


@pytest.fixture(autouse=True)
def _seed():
    paddle.seed(0)
    np.random.seed(0)


def state_arrays(model):
    return {k: np.array(v.numpy()) for k, v in model.state_dict().items()}


def assert_same_state(before, model):
    after = state_arrays(model)
    assert list(before) == list(after)
    for k in before:
        assert before[k].shape == after[k].shape, k
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)


class ConvBNNet(paddle.nn.Layer):
    """conv-bn-relu x2, a residual add, global pool and a linear head (small and fast)."""

    def __init__(self, width=8, num_classes=5):
        super().__init__()
        self.conv1 = paddle.nn.Conv2D(3, width, 3, padding=1)
        self.bn1 = paddle.nn.BatchNorm2D(width)
        self.conv2 = paddle.nn.Conv2D(width, width, 3, padding=1, bias_attr=False)
        self.bn2 = paddle.nn.BatchNorm2D(width)
        self.conv3 = paddle.nn.Conv2D(width, 2 * width, 3, padding=1)
        self.bn3 = paddle.nn.BatchNorm2D(2 * width)
        self.fc = paddle.nn.Linear(2 * width * 4 * 4, num_classes)

    def forward(self, x):
        a = paddle.nn.functional.relu(self.bn1(self.conv1(x)))
        b = paddle.nn.functional.relu(self.bn2(self.conv2(a)) + a)
        c = paddle.nn.functional.relu(self.bn3(self.conv3(b)))
        c = paddle.nn.functional.adaptive_avg_pool2d(c, 4)
        return self.fc(paddle.flatten(c, 1))


@pytest.fixture
def convbn():
    return ConvBNNet()


def randomize_bn(model):
    """Give BN layers non-trivial statistics so masked/pruned comparisons mean something."""
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.layer.norm._BatchNormBase):
            n = layer.weight.shape[0]
            layer.weight.set_value(np.random.uniform(0.5, 1.5, n).astype("float32"))
            layer.bias.set_value(np.random.uniform(-0.5, 0.5, n).astype("float32"))
            layer._mean.set_value(np.random.uniform(-0.2, 0.2, n).astype("float32"))
            layer._variance.set_value(np.random.uniform(0.5, 1.5, n).astype("float32"))
