"""slim_core.runtime (runner registry, Paddle Inference runner), the missing-extra error, spec normalization, BN folding."""

from __future__ import annotations

import sys

import numpy as np
import paddle
import pytest

from slim_core import ConfigError, DataError, ModelLoadError
from slim_core.bn_fold import find_linear_bn_pairs, fold_bn
from slim_core.errors import MissingExtraError, SlimError
from slim_core.extras import available, require
from slim_core.runtime import RUNTIMES, Runner, installed_runtimes, model_format, open_runner, register_runtime
from slim_core.spec import normalize_input_spec, spec_to_dicts, specs_from_batch, specs_from_dicts

nn = paddle.nn


class SEBlock(nn.Layer):
    """Squeeze-excitation as PaddleClas writes it: paddle.multiply with a hardsigmoid gate."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.conv1 = nn.Conv2D(c, c // 2, 1)
        self.conv2 = nn.Conv2D(c // 2, c, 1)

    def forward(self, x):
        s = nn.functional.relu(self.conv1(self.pool(x)))
        return paddle.multiply(x, nn.functional.hardsigmoid(self.conv2(s)))


class ConvBN(nn.Layer):
    def __init__(self, cin: int, cout: int, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, 3, padding=1, groups=groups, bias_attr=False)
        self.bn = nn.BatchNorm2D(cout)

    def forward(self, x):
        return nn.functional.hardswish(self.bn(self.conv(x)))


class LCNetish(nn.Layer):
    """PP-LCNet-like: LayerList-held depthwise/pointwise blocks with an SE block, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBN(3, 8)
        self.blocks = nn.LayerList([ConvBN(8, 8, groups=8), ConvBN(8, 16)])
        self.se = SEBlock(16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        x = self.se(x)
        return self.fc(paddle.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _randomize_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for sub in model.sublayers():
        if isinstance(sub, nn.layer.norm._BatchNormBase):
            c = sub._mean.shape[0]
            sub._mean.set_value(rng.normal(0, 0.1, c).astype("float32"))
            sub._variance.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))
            sub.weight.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))


def test_missing_extra_error_names_the_install_command():
    assert issubclass(MissingExtraError, SlimError) and issubclass(MissingExtraError, ImportError)
    with pytest.raises(MissingExtraError, match=r"pip install 'slim-deploy\[openvino\]'"):
        require("slim_no_such_module", package="slim-deploy", extra="openvino")
    with pytest.raises(MissingExtraError, match=r"OpenVINO backend .*pip install 'openvino>=2024'"):
        _missing_openvino()
    assert available("json") and not available("slim_no_such_module")


def _missing_openvino():
    saved = sys.modules.get("openvino")
    sys.modules["openvino"] = None  # makes `import openvino` fail like an absent package
    try:
        require("openvino")
    finally:
        if saved is None:
            del sys.modules["openvino"]
        else:
            sys.modules["openvino"] = saved


def test_registry_lists_builtin_runtimes_and_accepts_new_ones():
    assert {"paddle", "onnxruntime", "openvino"} <= set(RUNTIMES)
    assert "paddle" in installed_runtimes()
    assert RUNTIMES["openvino"].reads == ("onnx", "paddle-legacy") and RUNTIMES["openvino"].extra == "openvino"

    @register_runtime("echo-test", module="json", extra="", reads=("onnx",), description="test runtime")
    class Echo(Runner):
        def __init__(self, model_file, *, params_file=None, threads=1, int8=False):
            super().__init__(model_file, threads)
            self.input_names = ["x"]

        def run(self, arrays):
            return [np.asarray(a) * 2 for a in arrays]

    try:
        assert "echo-test" in installed_runtimes()
    finally:
        del RUNTIMES["echo-test"]


def test_open_runner_errors(tmp_path):
    with pytest.raises(ConfigError, match="runtime"):
        open_runner(tmp_path / "m.onnx", "tensorrt")
    with pytest.raises(ConfigError, match="cannot read a onnx model"):
        open_runner(tmp_path / "m.onnx", "paddle")
    with pytest.raises(ModelLoadError, match="unknown model file type"):
        model_format(tmp_path / "m.tflite")
    with pytest.raises(ModelLoadError, match="not found"):
        open_runner(tmp_path / "m.json", "paddle")
    with pytest.raises(ConfigError, match="threads"):
        open_runner(tmp_path / "m.json", "paddle", threads=0)


@pytest.mark.parametrize("fmt", ["pir", "legacy"])
def test_paddle_runner_matches_the_layer(tmp_path, fmt):
    paddle.seed(0)
    net = LCNetish() if fmt == "pir" else nn.Sequential(nn.Conv2D(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3))
    net.eval()
    spec = [paddle.static.InputSpec([None, 3, 16, 16], "float32", "x")]
    if fmt == "pir":
        paddle.jit.save(net, str(tmp_path / "m"), input_spec=spec)
        model_file = tmp_path / "m.json"
    else:
        with paddle.pir_utils.OldIrGuard():
            paddle.jit.save(net, str(tmp_path / "m"), input_spec=spec)
        paddle.disable_static()
        model_file = tmp_path / "m.pdmodel"
    x = np.random.default_rng(0).standard_normal([2, 3, 16, 16]).astype("float32")
    ref = net(paddle.to_tensor(x)).numpy()
    runner = open_runner(model_file, "paddle", threads=1)
    assert runner.runtime == "paddle" and runner.input_names == ["x"]
    (out,) = runner.run([x])
    assert np.abs(out - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))
    runner.feed([x])
    runner.run_fed()  # kernel-only path used by the latency table
    runner.close()


def test_spec_normalization_is_one_form():
    a = np.zeros((4, 3, 8, 8), "float32")
    (s,) = normalize_input_spec(a)
    assert list(s.shape) == [-1, 3, 8, 8] and s.name == "x"
    (s,) = normalize_input_spec(paddle.zeros([2, 5], "int64"), dynamic_batch=False)
    assert list(s.shape) == [2, 5] and "int64" in str(s.dtype)
    specs = specs_from_batch({"ids": np.zeros((2, 7), "int64"), "mask": np.ones((2, 7), "float32")}, ["mask", "ids"])
    assert [sp.name for sp in specs] == ["mask", "ids"] and list(specs[1].shape) == [-1, 7]
    assert spec_to_dicts(specs_from_dicts(spec_to_dicts(specs))) == spec_to_dicts(specs)
    with pytest.raises(ConfigError, match="positive size"):
        normalize_input_spec([1, 0, 8])


def test_trace_keeps_data_errors_for_bad_inputs():
    from slim_core import trace

    with pytest.raises(DataError, match="positive size"):
        trace(LCNetish(), input_spec=[[1, 0, 8, 8]])


def test_bn_folding_on_the_shared_graph_paddleclas_style():
    paddle.seed(0)
    net = LCNetish()
    _randomize_bn(net)
    net.eval()
    pairs = find_linear_bn_pairs(net, [None, 3, 16, 16])
    assert sorted((p.linear, p.bn) for p in pairs) == [
        ("blocks.0.conv", "blocks.0.bn"),
        ("blocks.1.conv", "blocks.1.bn"),
        ("stem.conv", "stem.bn"),
    ]
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal([3, 3, 16, 16]).astype("float32"))
    ref = net(x).numpy()
    folded = fold_bn(net, [None, 3, 16, 16])
    assert not any(isinstance(s, nn.layer.norm._BatchNormBase) for s in folded.sublayers())
    assert any(isinstance(s, nn.layer.norm._BatchNormBase) for s in net.sublayers())  # the source is untouched
    assert np.abs(folded(x).numpy() - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))
