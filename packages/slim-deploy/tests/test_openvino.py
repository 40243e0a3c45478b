"""OpenVINO as a deploy runtime: agreement with Paddle Inference and ONNX Runtime, threads, latency hint,
compiled-model cache, INT8 report on a QDQ model, and the missing-extra error."""

from __future__ import annotations

import sys

import numpy as np
import paddle
import pytest
from conftest import inputs_for, layer_out

import slim_deploy
from slim_core.errors import MissingExtraError
from slim_core.runtime import open_runner, precision_report
from slim_deploy import Predictor

ov = pytest.importorskip("openvino", reason="openvino is not installed: pip install 'slim-deploy[openvino]' to test the OpenVINO runtime")
nn = paddle.nn


@pytest.fixture(autouse=True)
def _slim_cache(tmp_path_factory, monkeypatch):
    """OpenVINO's compiled-model cache goes to a test folder, never to the user's ~/.cache."""
    monkeypatch.setenv("SLIM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "slim-cache"))


class SELCNet(nn.Layer):
    """PaddleClas-style: hardswish conv blocks held in a LayerList, SE with paddle.multiply, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.LayerList(
            [nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.Hardswish()), nn.Conv2D(8, 8, 3, padding=1, groups=8)]
        )
        self.se1 = nn.Conv2D(8, 4, 1)
        self.se2 = nn.Conv2D(4, 8, 1)
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        s = nn.functional.hardsigmoid(self.se2(nn.functional.relu(self.se1(nn.functional.adaptive_avg_pool2d(x, 1)))))
        x = paddle.multiply(x, s)
        return self.fc(paddle.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _close(a, b, scale_of):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) <= 1e-4 * max(1.0, float(np.abs(scale_of).max()))


@pytest.mark.parametrize("fmt", ["onnx", "paddle-legacy"])
def test_openvino_agrees_with_paddle_and_onnxruntime(exported, fmt):
    model, spec, result = exported
    x = inputs_for(spec, 3)
    ref = layer_out(model, x)
    pov = Predictor(result.path, backend="openvino", format=fmt, threads=1)
    assert (pov.backend, pov.format) == ("openvino", fmt)
    out = pov(x)
    assert _close(out, ref, ref)
    assert _close(out, Predictor(result.path, backend="paddle", format="paddle", threads=1)(x), ref)
    assert _close(out, Predictor(result.path, backend="onnxruntime", threads=1)(x), ref)
    assert "openvino running the" in pov.describe()


def test_openvino_runs_a_pir_model_by_conversion_paddleclas_style(tmp_path):
    paddle.seed(0)
    net = SELCNet()
    net.eval()
    res = slim_deploy.export(net, tmp_path / "lcnet", [None, 3, 16, 16], format="paddle")
    x = np.random.default_rng(2).standard_normal([2, 3, 16, 16]).astype("float32")
    pred = Predictor(res.path, backend="openvino", threads=1)
    assert pred.backend == "openvino" and pred.format == "onnx"  # PIR is converted to ONNX first
    ref = layer_out(net, x)
    assert _close(pred(x), ref, ref)


def test_openvino_threads_latency_hint_and_compiled_cache(exported, tmp_path_factory):
    _, spec, result = exported
    runner = open_runner(result.path / "model.onnx", "openvino", threads=2)
    shape = [1, *spec[1:]]
    compiled = runner.compiled([shape])
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 2
    assert str(compiled.get_property("PERFORMANCE_HINT")) in ("LATENCY", "PerformanceMode.LATENCY")
    # a second runner of the same file and settings reuses the compiled model instead of compiling again
    again = open_runner(result.path / "model.onnx", "openvino", threads=2)
    assert again.compiled([shape]) is compiled
    cache = tmp_path_factory.getbasetemp() / "slim-cache" / "openvino"
    assert cache.is_dir() and any(cache.iterdir())  # OpenVINO's on-disk cache, for the next process


def _qdq_conv_model(path, rng):
    """Two convolutions in the QDQ form (u8 activations, per-channel s8 weights), built with the onnx helpers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def qdq_act(name, scale):
        inits.extend(
            [numpy_helper.from_array(np.array(scale, "float32"), f"{name}_s"), numpy_helper.from_array(np.array(128, "uint8"), f"{name}_z")]
        )
        nodes.append(helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"]))
        return f"{name}_dq"

    def conv(name, x, cin, cout):
        w = rng.standard_normal([cout, cin, 3, 3]).astype("float32") * 0.2
        scale = np.abs(w).reshape(cout, -1).max(1) / 127.0
        wq = np.clip(np.round(w / scale[:, None, None, None]), -127, 127).astype("int8")
        inits.extend(
            [
                numpy_helper.from_array(wq, f"{name}_wq"),
                numpy_helper.from_array(scale.astype("float32"), f"{name}_ws"),
                numpy_helper.from_array(np.zeros(cout, "int8"), f"{name}_wz"),
                numpy_helper.from_array(np.zeros(cout, "float32"), f"{name}_b"),
            ]
        )
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_wq", f"{name}_ws", f"{name}_wz"], [f"{name}_w"], axis=0))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_y"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"{name}_y"], [f"{name}_r"]))
        return f"{name}_r"

    y = conv("c1", qdq_act("x", 0.03), 3, 16)
    y = conv("c2", qdq_act(y, 0.02), 16, 16)
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 16, 16])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [None, 16, 16, 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_openvino_reports_int8_layers_of_a_qdq_model(exported, tmp_path):
    _, spec, result = exported
    rng = np.random.default_rng(0)
    qdq = _qdq_conv_model(tmp_path / "model_int8.onnx", rng)
    fp32 = precision_report(result.path / "model.onnx", [[1, *spec[1:]]])
    int8 = precision_report(qdq, [[1, 3, 16, 16]])
    assert fp32.int8_count == 0 and "no layer" in fp32.summary()
    assert int8.by_type().get("Convolution") == (2, 2)  # both convolutions run in INT8
    assert "Convolution 2/2" in int8.summary() and int8.to_dict()["int8_layers"] == int8.int8_count
    # the QDQ file gives the same numbers on OpenVINO and ONNX Runtime (same integer arithmetic, up to rounding)
    x = rng.uniform(-3, 3, [2, 3, 16, 16]).astype("float32")
    a = open_runner(qdq, "openvino", threads=1).run([x])[0]
    b = open_runner(qdq, "onnxruntime", threads=1).run([x])[0]
    cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cos > 0.99


def test_missing_openvino_names_the_extra(exported, monkeypatch):
    _, _, result = exported
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail like an absent package
    with pytest.raises(MissingExtraError, match=r"pip install 'slim-deploy\[openvino\]'"):
        Predictor(result.path, backend="openvino")
