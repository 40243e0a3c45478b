import paddle
import pytest

from slim_core.layers import get_sublayer, set_sublayer


def _net():
    class Net(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.body = paddle.nn.Sequential(paddle.nn.Linear(2, 3), paddle.nn.ReLU())
            self.head = paddle.nn.Linear(3, 1)

        def forward(self, x):
            return self.head(self.body(x))

    return Net()


def test_get_and_set_by_path():
    net = _net()
    assert get_sublayer(net, "") is net
    assert isinstance(get_sublayer(net, "body.0"), paddle.nn.Linear)
    set_sublayer(net, "body.1", paddle.nn.Identity())
    set_sublayer(net, "head", paddle.nn.Linear(3, 4))
    assert isinstance(net.body[1], paddle.nn.Identity)
    assert net.head is get_sublayer(net, "head")
    assert net(paddle.ones([5, 2])).shape == [5, 4]
    assert [n for n, _ in net.named_sublayers()] == ["body", "body.0", "body.1", "head"]


def test_missing_path_names_the_part():
    with pytest.raises(KeyError, match="nope"):
        get_sublayer(_net(), "body.nope")
