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


def test_keys_with_dots_as_paddleclas_registers_blocks():
    # PaddleClas EfficientNet: self.add_sublayer("_blocks." + str(idx) + ".", block) -> paths "_blocks.0..conv"
    class Net(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.seq = [self.add_sublayer("_blocks." + str(i) + ".", paddle.nn.Sequential(paddle.nn.Linear(2, 2))) for i in range(2)]

        def forward(self, x):
            for b in self.seq:
                x = b(x)
            return x

    net = Net()
    paths = [n for n, _ in net.named_sublayers()]
    assert "_blocks.1..0" in paths
    for p in paths:
        assert get_sublayer(net, p) is dict(net.named_sublayers())[p]
    set_sublayer(net, "_blocks.1..0", paddle.nn.Identity())
    assert isinstance(net.seq[1][0], paddle.nn.Identity)
    with pytest.raises(KeyError, match="_blocks.2"):
        get_sublayer(net, "_blocks.2..0")
