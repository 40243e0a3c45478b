"""PTQ of inference-model files: max_metric_drop with eval_fn on the runtime, sensitivity of a model path, ONNX graph clean-up."""

import json

import numpy as np
import paddle
import pytest
from conftest import rel_err

from slim_core.errors import ConfigError
from slim_quant import PTQConfig, quant_sensitivity, quantize_inference_model

SPEC = [paddle.static.InputSpec([None, 1, 8, 8], "float32", "x")]


@pytest.fixture(scope="module")
def legacy_digits(digits, tmp_path_factory):
    src = tmp_path_factory.mktemp("legacy") / "model"
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(digits[0], str(src), input_spec=SPEC)
    return src


def _error_metric(digits):
    """Relative output error against the float dygraph model on test images (lower is better)."""
    x = digits[4][:128]
    with paddle.no_grad():
        ref = digits[0](paddle.to_tensor(x)).numpy()
    return lambda pred: rel_err(pred.run([x])[0], ref)


def test_max_metric_drop_needs_eval_fn_on_the_inference_path(legacy_digits, calib, tmp_path):
    with pytest.raises(ConfigError, match="max_metric_drop needs eval_fn"):
        quantize_inference_model(legacy_digits, PTQConfig(fold_bn=False, max_metric_drop=0.5), calib, tmp_path / "q")
    with pytest.raises(ConfigError, match="eval_fn must be a callable"):
        quantize_inference_model(legacy_digits, PTQConfig(fold_bn=False), calib, tmp_path / "q", eval_fn=3)
    with pytest.raises(ConfigError, match="format 'tflite'"):
        quantize_inference_model(legacy_digits, PTQConfig(fold_bn=False), calib, tmp_path / "q", formats=("tflite",))
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("fmt", ["paddle", "onnx"])
def test_max_metric_drop_keeps_the_most_sensitive_ops_in_float(fmt, legacy_digits, digits, calib, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    metric = _error_metric(digits)
    loose = quantize_inference_model(
        legacy_digits,
        PTQConfig(fold_bn=False, calibrator="abs_max", max_metric_drop=10.0, higher_is_better=False),
        calib,
        tmp_path / "loose",
        formats=(fmt,),
        eval_fn=metric,
        latency_guard=False,
    )
    full = loose.metrics[f"{fmt}_int8_all_ops"]
    assert loose.skipped[fmt] == {} and loose.metrics[f"{fmt}_int8"] == full
    assert loose.metrics[f"{fmt}_float"] < 1e-4 < full  # the float model on the runtime is the reference itself
    target = full / 3
    res = quantize_inference_model(
        legacy_digits,
        PTQConfig(fold_bn=False, calibrator="abs_max", max_metric_drop=target, higher_is_better=False),
        calib,
        tmp_path / "tight",
        formats=(fmt,),
        eval_fn=metric,
        latency_guard=False,
    )
    kept = res.skipped[fmt]
    assert kept and all(r.startswith("max_metric_drop: metric gain") for r in kept.values())
    assert res.metrics[f"{fmt}_int8"] <= target + res.metrics[f"{fmt}_float"]
    from slim_deploy.predictor import Predictor

    pred = Predictor(tmp_path / "tight", backend="paddle" if fmt == "paddle" else "onnxruntime", threads=2)
    assert metric(pred) == pytest.approx(res.metrics[f"{fmt}_int8"], rel=1e-3, abs=1e-5)  # the exported model is the one measured
    manifest = json.loads((tmp_path / "tight" / "slim.json").read_text())
    record = manifest["compression"]["quantization"]["export"][fmt]
    assert record["skipped_weights"] == kept and record["metrics"]["int8"] == res.metrics[f"{fmt}_int8"]
    assert not {o.split(":")[1] for o in res.quantized_ops[fmt]} & set(kept)
    assert record["int8_ops"] == res.int8_ops[fmt] == len(res.quantized_ops[fmt])


def test_quant_sensitivity_of_an_inference_model(legacy_digits, digits, calib, tmp_path):
    rep = quant_sensitivity(str(legacy_digits), calib, data=[digits[4][:64]])
    assert rep.metric == "relative output error" and not rep.higher_is_better
    assert {r.type for r in rep.layers} == {"conv2d", "matmul_v2"} and len(rep.layers) == 4
    assert rep.float_metric < 1e-4 < rep.quantized_metric
    assert all(r.only > 0 for r in rep.layers) and max(r.gain for r in rep.layers) > 0
    rep.save(tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())["layers"][0]["layer"] == rep.ranked()[0].layer
    acc_x, acc_y = digits[4], digits[5]
    rep2 = quant_sensitivity(
        legacy_digits, calib, eval_fn=lambda p: float((p.run([acc_x])[0].argmax(1) == acc_y).mean()), format="onnx", config=PTQConfig()
    )
    assert rep2.higher_is_better and len(rep2.layers) == 4 and rep2.float_metric >= 0.8
    with pytest.raises(ConfigError, match="format 'x'"):
        quant_sensitivity(legacy_digits, calib, format="x")
    with pytest.raises(ConfigError, match="format is for inference models"):
        quant_sensitivity(digits[0], calib, format="onnx")


def test_affine_blocks_fold_into_convs_in_onnx_and_paddle(tmp_path):
    """PP-LCNet's learnable affine blocks (Conv -> *a + b -> act -> *c + d -> Conv 1x1) fold into the convs exactly."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from slim_quant.onnx_qdq import _clean_up, _Graph

    nn = paddle.nn

    class Affine(nn.Layer):
        def __init__(self, a, b):
            super().__init__()
            self.a = self.create_parameter([1], default_initializer=nn.initializer.Constant(a))
            self.b = self.create_parameter([1], default_initializer=nn.initializer.Constant(b))

        def forward(self, x):
            return self.a * x + self.b

    net = nn.Sequential(
        nn.Conv2D(3, 8, 3, padding=1), Affine(1.3, -0.2), nn.Hardswish(), Affine(0.7, 0.1), nn.Conv2D(8, 4, 1), Affine(0.5, 0.3)
    )
    net.eval()
    src = tmp_path / "m"
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(net, str(src), input_spec=[paddle.static.InputSpec([None, 3, 6, 6], "float32", "x")])
    from slim_deploy.predictor import paddle_to_onnx

    paddle_to_onnx(src.with_suffix(".pdmodel"), src.with_suffix(".pdiparams"), tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    gr = _Graph(model)
    assert _clean_up(gr, target_runtime="openvino") == 2
    ops = [n.op_type for n in gr.g.node]
    assert not [n for n in gr.g.node if n.op_type in ("Mul", "Add") and any(i in gr.inits for i in n.input)] and ops.count("Conv") == 2
    # paddle2onnx writes hardswish as x * HardSigmoid(x): the clean-up makes it one HardSwish (opset 14)
    assert ops.count("HardSwish") == 1 and "HardSigmoid" not in ops and "Mul" not in ops
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 14
    onnx.save(model, str(tmp_path / "folded.onnx"))
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype("float32")
    got = ort.InferenceSession(str(tmp_path / "folded.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with paddle.no_grad():
        ref = net(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # the same blocks in the legacy program (Paddle oneDNN export): folded exactly, fewer element-wise ops
    from slim_core.model_io import load_inference_model
    from slim_quant.export import quantize_legacy_program

    quantize_legacy_program(src, tmp_path / "q" / "model", [{"x": x}], float_out_prefix=tmp_path / "f" / "model")
    folded = load_inference_model(tmp_path / "f" / "model")
    with paddle.pir_utils.OldIrGuard():
        types = [op.type for op in folded.program.global_block().ops]
    assert types.count("elementwise_mul") == 0 and types.count("elementwise_add") == 2  # the two conv biases
    np.testing.assert_allclose(folded.run({"x": x})[0], ref, rtol=1e-4, atol=1e-5)


def test_hardswish_runs_in_int8_on_openvino(tmp_path):
    """PP-LCNetV3's conv -> BN -> hardswish -> affine -> depthwise -> hardswish: every layer OpenVINO runs is INT8 but the input quantize.

    paddle2onnx's x * HardSigmoid(x) left a float HardSigmoid per hardswish (and a float requantize after it); the
    clean-up's single HardSwish is fused by OpenVINO into the INT8 convolution and its requantization.
    """
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from slim_core.runtime import open_runner, precision_report
    from slim_deploy.predictor import paddle_to_onnx
    from slim_quant.onnx_qdq import quantize_onnx_model

    nn = paddle.nn
    paddle.seed(0)
    net = nn.Sequential(
        nn.Conv2D(3, 16, 3, padding=1),
        nn.BatchNorm2D(16),
        nn.Hardswish(),
        nn.Conv2D(16, 16, 3, padding=1, groups=16),
        nn.Hardswish(),
        nn.Conv2D(16, 8, 1),
    )
    net.eval()
    src = tmp_path / "m"
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(net, str(src), input_spec=[paddle.static.InputSpec([None, 3, 16, 16], "float32", "x")])
    paddle_to_onnx(src.with_suffix(".pdmodel"), src.with_suffix(".pdiparams"), tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype("float32")
    quantize_onnx_model(tmp_path / "m.onnx", tmp_path / "q.onnx", [{"x": x}], target_runtime="openvino")
    rep = precision_report(open_runner(tmp_path / "q.onnx", "openvino", threads=1), [[1, 3, 16, 16]])
    floats = [layer for layer in rep.layers if layer not in rep.int8_layers]
    assert rep.by_type()["Convolution"] == (3, 3) and len(floats) == 1, rep.layers  # the graph input's quantize
    with paddle.no_grad():
        ref = net(paddle.to_tensor(x[:1])).numpy()
    got = open_runner(tmp_path / "q.onnx", "openvino", threads=1).run([x[:1]])[0]
    assert rel_err(got, ref) < 0.1
    # paddle2onnx 2.1 writes x * HardSigmoid(x), 2.0 writes HardSwish: whichever form the file has, ONNX Runtime's
    # layout gets the two ops (it runs a QDQ HardSwish slower) and OpenVINO's layout one HardSwish per hardswish
    import onnx

    from slim_quant.onnx_qdq import _fuse_hardswish, _Graph, _split_hardswish

    def ops(name):
        return [n.op_type for n in onnx.load(str(tmp_path / name)).graph.node]

    for form, rewrite in (("one", _fuse_hardswish), ("two", _split_hardswish)):
        model = onnx.load(str(tmp_path / "m.onnx"))
        rewrite(_Graph(model))
        onnx.save(model, str(tmp_path / f"m_{form}.onnx"))
        assert ops(f"m_{form}.onnx").count("HardSwish") == (2 if form == "one" else 0)
        quantize_onnx_model(tmp_path / f"m_{form}.onnx", tmp_path / f"q_ort_{form}.onnx", [{"x": x}])
        quantize_onnx_model(tmp_path / f"m_{form}.onnx", tmp_path / f"q_ov_{form}.onnx", [{"x": x}], target_runtime="openvino")
        assert "HardSwish" not in ops(f"q_ort_{form}.onnx") and ops(f"q_ort_{form}.onnx").count("HardSigmoid") == 2
        assert ops(f"q_ov_{form}.onnx").count("HardSwish") == 2 and "HardSigmoid" not in ops(f"q_ov_{form}.onnx")
        got = open_runner(tmp_path / f"q_ort_{form}.onnx", "onnxruntime", threads=1).run([x[:1]])[0]
        assert rel_err(got, ref) < 0.1


def test_a_runtime_that_misses_max_metric_drop_with_every_op_in_float_is_refused_with_the_figures(legacy_digits, calib, tmp_path):
    # what Paddle oneDNN does on PP-OCRv4 rec: the loss is in the runtime's INT8 arithmetic (observer-scaled
    # element-wise ops, symmetric s8 after hardswish), so no op kept in float recovers it; the format is refused
    # at once (no ranking of every op) with the measured figures, and the other format is still written
    pytest.importorskip("onnxruntime")
    calls = []

    def metric(pred):  # 1.0 on any float model and on ONNX; 0.0 on every Paddle oneDNN INT8 build
        calls.append(pred.int8)
        return 0.0 if pred.int8 else 1.0

    res = quantize_inference_model(
        legacy_digits,
        PTQConfig(fold_bn=False, max_metric_drop=0.5),
        calib,
        tmp_path / "q",
        formats=("paddle", "onnx"),
        eval_fn=metric,
        latency_guard=False,
    )
    assert res.formats == ["onnx"]
    why = res.skipped_formats["paddle"]
    assert why.startswith("Paddle oneDNN INT8 refused: metric 0 with every op INT8 and 0 with all") and "vs 1 in float" in why
    assert res.metrics["paddle_float"] == 1.0 and res.metrics["paddle_int8_all_candidates_float"] == 0.0
    assert calls.count(True) == 2  # every op INT8, then every candidate in float: no per-op ranking
    manifest = json.loads((tmp_path / "q" / "slim.json").read_text())
    assert manifest["verification"]["skipped_formats"]["paddle"] == why


def test_inference_model_laid_out_for_openvino_is_measured_on_openvino(tmp_path):
    """quantize_inference_model(onnx_target="openvino"): max_metric_drop measures the metric on OpenVINO, the record
    says the target, and OpenVINO runs every conv of the PaddleClas-style net in INT8."""
    pytest.importorskip("onnxruntime")
    from slim_core.runtime import runtime_available
    from slim_core.testing import clas_style_net

    if not runtime_available("openvino"):
        pytest.skip("openvino is not installed (pip install 'slim-quant[openvino]')")
    src = tmp_path / "fp32" / "model"
    paddle.jit.save(clas_style_net(), str(src), input_spec=[paddle.static.InputSpec([None, 3, 32, 32], "float32", "x")])
    rng = np.random.default_rng(0)
    batches = [rng.random((4, 3, 32, 32)).astype("float32") for _ in range(2)]
    backends = set()

    def metric(pred):
        backends.add(pred.backend)
        return 1.0

    res = quantize_inference_model(
        src, PTQConfig(max_metric_drop=0.5), batches, tmp_path / "int8", formats=("onnx",), eval_fn=metric, latency_guard=False,
        onnx_target="openvino",
    )  # fmt: skip
    assert backends == {"openvino"}
    rec = json.loads((tmp_path / "int8" / "slim.json").read_text())["compression"]["quantization"]["export"]["onnx"]
    assert rec["target_runtime"] == "openvino"
    conv = res.runtimes["openvino"]["by_type"]["Convolution"]
    assert conv["int8"] == conv["total"] > 0 and res.agreement["openvino_cosine"] > 0.99
