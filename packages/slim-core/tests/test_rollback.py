"""slim_core.rollback: a snapshot puts back the tree, attributes, containers and tensor values."""

import numpy as np
import paddle
import pytest

from slim_core.errors import error_summary
from slim_core.layers import set_sublayer
from slim_core.rollback import LayerSnapshot, all_or_nothing, in_place, set_tensor_value
from slim_core.testing import assert_model_unchanged, clas_style_net, model_fingerprint


def _mangle(net):
    """Every kind of change an in-place verb makes."""
    conv = net.stem.conv
    set_tensor_value(conv.weight, np.zeros((4, 3, 3, 3), "float32"))  # a shape change (pruning)
    conv._out_channels = 4
    net.blocks[0].dw.bn = paddle.nn.Identity()  # a replaced sublayer (BN folding)
    set_sublayer(net, "fc", paddle.nn.Sequential(net.fc))  # a wrapper (quantization)
    conv.bias = paddle.create_parameter([4], "float32")  # a parameter that did not exist
    net.blocks[1].pw.bn._mean.set_value(paddle.ones([16]))  # a buffer value
    net.register_forward_pre_hook(lambda layer, inputs: None)  # a hook
    net.slim_state = {"done": True}  # an attribute
    net.fc[0].weight.stop_gradient = True
    net.train()


def test_restore_undoes_every_kind_of_change():
    net = clas_style_net()
    net.eval()
    x = paddle.randn([2, 3, 32, 32])
    y = net(x).numpy()
    hooks = net._forward_pre_hooks
    before = model_fingerprint(net)
    snap = LayerSnapshot(net)
    _mangle(net)
    snap.restore()
    assert_model_unchanged(before, net)
    assert net._forward_pre_hooks is hooks and not hooks  # same container object, emptied again
    assert not hasattr(net, "slim_state")
    np.testing.assert_array_equal(net(x).numpy(), y)


CHANGES = {
    "shape": lambda net: set_tensor_value(net.stem.conv.weight, np.zeros((4, 3, 3, 3), "float32")),
    "attribute": lambda net: setattr(net.stem.conv, "_out_channels", 4),
    "sublayer": lambda net: setattr(net.blocks[0].dw, "bn", paddle.nn.Identity()),
    "wrapper": lambda net: set_sublayer(net, "fc", paddle.nn.Sequential(net.fc)),
    "new-parameter": lambda net: setattr(net.stem.conv, "bias", paddle.create_parameter([8], "float32")),
    "buffer": lambda net: net.blocks[1].pw.bn._mean.set_value(paddle.ones([16])),
    "stop-gradient": lambda net: setattr(net.fc.weight, "stop_gradient", True),
    "value": lambda net: net.fc.weight.set_value(net.fc.weight * 2),
    "mode": lambda net: net.eval(),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_fingerprint_sees_each_change_and_restore_undoes_it(change):
    net = clas_style_net()
    before = model_fingerprint(net)
    snap = LayerSnapshot(net)
    CHANGES[change](net)
    with pytest.raises(AssertionError):
        assert_model_unchanged(before, net)
    snap.restore()
    assert_model_unchanged(before, net)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt], ids=["error", "ctrl-c"])
def test_in_place_decorator_restores_and_reraises(exc):
    @in_place
    def halve_then_fail_(model):
        for p in model.parameters():
            p.set_value(p * 0.5)
        raise exc("boom")

    net = clas_style_net()
    before = model_fingerprint(net)
    with pytest.raises(exc):
        halve_then_fail_(net)
    assert_model_unchanged(before, net)


def test_success_keeps_changes():
    net = paddle.nn.Linear(2, 2)
    with all_or_nothing(net):
        net.weight.set_value(paddle.zeros([2, 2]))
    assert not net.weight.numpy().any()


def test_error_summary_picks_the_paddle_line():
    exc = ValueError("\n\n----------\nC++ Traceback (most recent call last):\n0 foo\n(InvalidArgument) channels 5 != 3\n  [Hint: x]")
    assert error_summary(exc) == "ValueError: (InvalidArgument) channels 5 != 3"
