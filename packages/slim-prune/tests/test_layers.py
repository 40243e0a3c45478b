"""Each handler shrinks its layer so the layer computes exactly the kept channels."""

import numpy as np
import paddle
import pytest

from slim_core import UnsupportedOpError
from slim_prune import handler_for

nn = paddle.nn
KEEP_OUT = [0, 2, 3, 6]


def _np(t):
    return np.asarray(t.numpy())


@pytest.mark.parametrize(
    "make, x_shape, channel_axis",
    [
        (lambda: nn.Conv2D(4, 8, 3, padding=1), [2, 4, 6, 6], 1),
        (lambda: nn.Conv1D(4, 8, 3), [2, 4, 9], 1),
        (lambda: nn.Conv2DTranspose(4, 8, 3, stride=2), [2, 4, 5, 5], 1),
        (lambda: nn.Linear(5, 8), [3, 5], -1),
        (lambda: nn.Embedding(10, 8), None, -1),
    ],
    ids=["conv2d", "conv1d", "conv2d-transpose", "linear", "embedding"],
)
def test_prune_out_keeps_exactly_the_kept_outputs(make, x_shape, channel_axis):
    layer = make()
    layer.eval()
    x = paddle.to_tensor(np.arange(6).reshape(2, 3)) if x_shape is None else paddle.randn(x_shape)
    ref = np.take(_np(layer(x)), KEEP_OUT, axis=channel_axis)
    h = handler_for(layer)
    h.prune_out(layer, KEEP_OUT)
    assert h.count_out(layer) == len(KEEP_OUT)
    np.testing.assert_allclose(_np(layer(x)), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make, x_shape",
    [
        (lambda: nn.Conv2D(8, 4, 3, padding=1), [2, 8, 6, 6]),
        (lambda: nn.Conv2DTranspose(8, 4, 3), [2, 8, 5, 5]),
        (lambda: nn.Linear(8, 3), [3, 8]),
    ],
    ids=["conv2d", "conv2d-transpose", "linear"],
)
def test_prune_in_equals_zeroed_inputs(make, x_shape):
    layer = make()
    x = paddle.randn(x_shape)
    axis = 1 if len(x_shape) > 2 else -1
    drop = [i for i in range(8) if i not in KEEP_OUT]
    xz = _np(x).copy()
    np.put_along_axis(xz, np.array(drop).reshape([-1 if a == (axis % xz.ndim) else 1 for a in range(xz.ndim)]), 0.0, axis=axis)
    ref = _np(layer(paddle.to_tensor(xz)))
    handler_for(layer).prune_in(layer, KEEP_OUT)
    out = layer(paddle.to_tensor(np.take(_np(x), KEEP_OUT, axis=axis)))
    np.testing.assert_allclose(_np(out), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make, x_shape",
    [
        (lambda: nn.Conv2D(8, 8, 3, padding=1, groups=8), [2, 8, 5, 5]),
        (lambda: nn.BatchNorm2D(8), [2, 8, 3, 3]),
        (lambda: nn.BatchNorm1D(8), [4, 8]),
        (lambda: nn.InstanceNorm2D(8), [2, 8, 3, 3]),
        (lambda: nn.PReLU(8, 0.1), [2, 8, 3, 3]),
        (lambda: nn.LayerNorm(8), [3, 8]),
    ],
    ids=["depthwise-conv", "batchnorm2d", "batchnorm1d", "instancenorm", "prelu", "layernorm"],
)
def test_channelwise_layers_prune_in_and_out_together(make, x_shape):
    layer = make()
    layer.eval()
    for p in layer.parameters():
        p.set_value(np.random.uniform(0.5, 1.5, p.shape).astype("float32"))
    x = paddle.randn(x_shape)
    axis = 1 if "LayerNorm" not in type(layer).__name__ else -1
    ref = np.take(_np(layer(x)), KEEP_OUT, axis=axis)
    handler_for(layer).prune_out(layer, KEEP_OUT)
    out = layer(paddle.to_tensor(np.take(_np(x), KEEP_OUT, axis=axis)))
    assert list(out.shape)[axis] == len(KEEP_OUT)
    if "LayerNorm" not in type(layer).__name__:  # LayerNorm normalizes over the pruned axis: values change by design
        np.testing.assert_allclose(_np(out), ref, rtol=1e-5, atol=1e-5)


def test_groupnorm_prunes_whole_groups():
    gn = nn.GroupNorm(4, 8)
    gn.eval()
    x = paddle.randn([2, 8, 3, 3])
    keep = [0, 1, 4, 5]  # groups 0 and 2 (2 channels per group)
    ref = np.take(_np(gn(x)), keep, axis=1)
    handler_for(gn).prune_out(gn, keep)
    assert gn._num_groups == 2
    np.testing.assert_allclose(_np(gn(paddle.to_tensor(np.take(_np(x), keep, axis=1)))), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(UnsupportedOpError, match="round_to=2"):
        handler_for(gn).prune_out(gn, [0, 1, 2])


def test_grouped_conv_input_cannot_be_pruned_alone():
    conv = nn.Conv2D(8, 8, 3, groups=2)
    with pytest.raises(UnsupportedOpError, match="grouped conv"):
        handler_for(conv).prune_in(conv, [0, 1])


def test_unknown_layer_has_no_handler():
    class Custom(nn.Layer):
        pass

    assert handler_for(Custom(), required=False) is None
    with pytest.raises(UnsupportedOpError, match="Custom"):
        handler_for(Custom())


def test_shrunk_layers_train_and_export(tmp_path):
    model = nn.Sequential(nn.Conv2D(3, 8, 3), nn.BatchNorm2D(8), nn.ReLU(), nn.Conv2D(8, 4, 1))
    handler_for(model[0]).prune_out(model[0], KEEP_OUT)
    handler_for(model[1]).prune_out(model[1], KEEP_OUT)
    handler_for(model[3]).prune_in(model[3], KEEP_OUT)
    param_ids = [id(p) for p in model.parameters()]
    opt = paddle.optimizer.Adam(parameters=model.parameters())
    loss = model(paddle.randn([2, 3, 8, 8])).mean()
    loss.backward()
    opt.step()
    assert [id(p) for p in model.parameters()] == param_ids  # same Parameter objects, new shapes
    model.eval()
    paddle.jit.save(model, str(tmp_path / "m"), input_spec=[paddle.static.InputSpec([None, 3, 8, 8])])
    loaded = paddle.jit.load(str(tmp_path / "m"))
    x = paddle.randn([1, 3, 8, 8])
    np.testing.assert_allclose(_np(loaded(x)), _np(model(x)), rtol=1e-5, atol=1e-5)
