import json
import warnings

import numpy as np
import paddle
import pytest
from conftest import rel_err

from slim_core import demo
from slim_core.errors import ConfigError, ExportError, OutputExistsError
from slim_core.params_file import read_params_file
from slim_deploy.predictor import Predictor
from slim_quant import ExportQualityWarning, LatencyGuardWarning, PTQConfig, export, quantize, quantize_inference_model


def _int8_fraction(params_file):
    recs = read_params_file(params_file)
    total = sum(r.nbytes for r in recs)
    return sum(r.nbytes for r in recs if r.dtype == "int8") / total, total


@pytest.fixture(scope="module")
def digits_export(digits, calib, tmp_path_factory):
    q = quantize(digits[0], PTQConfig(calibrator="mse"), calib)
    out = tmp_path_factory.mktemp("exp") / "digits_int8"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = export(q, out)
    return q, out, res, caught


def test_export_writes_int8_weights_and_manifest(digits_export, tmp_path):
    q, out, res, _ = digits_export
    assert sorted(p.name for p in out.iterdir()) == ["model_legacy.pdiparams", "model_legacy.pdmodel", "slim.json"]
    frac, total = _int8_fraction(out / "model_legacy.pdiparams")
    assert frac > 0.9  # weights are int8 on disk; only biases and scales stay float
    fp32 = tmp_path / "fp32"
    paddle.jit.save(demo.build_tiny_cnn(), str(fp32 / "model"), input_spec=[paddle.static.InputSpec([None, 1, 8, 8], "float32", "x")])
    assert total < 0.35 * (fp32 / "model.pdiparams").stat().st_size
    manifest = json.loads((out / "slim.json").read_text())
    assert manifest["int8"] is True
    qrec = manifest["compression"]["quantization"]
    assert sorted(qrec["quantized_layers"]) == ["conv1", "conv2", "fc1", "fc2"]
    assert len(qrec["export"]["paddle"]["quantized_ops"]) == 4
    assert res.qdq_tensors["paddle"] > 0 and res.int8_ops == {"paddle": 4}


def test_onednn_predictor_agrees_with_fake_quant_layer(digits, digits_export):
    q, out, res, _ = digits_export
    xt, yt = digits[4], digits[5]
    pred = Predictor(out, threads=2)
    assert pred.int8
    got = pred.run([xt])[0]
    with paddle.no_grad():
        ref = q(paddle.to_tensor(xt)).numpy()
    assert rel_err(got, ref) < 0.08
    assert (got.argmax(1) == ref.argmax(1)).mean() > 0.97
    assert (got.argmax(1) == yt).mean() >= digits[1] - 0.02
    assert res.agreement["paddle_top1_agreement"] > 0.95


def test_latency_guard_warns_when_int8_is_not_faster(digits_export):
    _, _, res, caught = digits_export
    assert {"paddle_fp32", "paddle_int8"} <= set(res.latency_ms)
    slower = res.latency_ms["paddle_int8"] >= 0.95 * res.latency_ms["paddle_fp32"]
    assert slower == any(issubclass(w.category, LatencyGuardWarning) for w in caught)


def test_export_of_resnet18_round_trip(tmp_path):
    paddle.seed(1)
    model = paddle.vision.models.resnet18(num_classes=10)
    model.eval()
    rng = np.random.default_rng(0)
    batches = [rng.random((2, 3, 32, 32)).astype("float32") for _ in range(2)]
    q = quantize(model, PTQConfig(calibrator="abs_max"), batches)
    res = export(q, tmp_path / "r18", latency_guard=False)
    assert len(res.quantized_ops["paddle"]) == 21
    frac, _ = _int8_fraction(tmp_path / "r18" / "model_legacy.pdiparams")
    assert frac > 0.95
    # the whole INT8 program (q/dq ops, scales, no op_callstack text) is far smaller than the FP32 one
    assert res.file_bytes["model_legacy.pdmodel"] + res.file_bytes["model_legacy.pdiparams"] < 0.3 * res.fp32_bytes["paddle"]
    # recording scales on intermediates of fused conv -> bias -> act chains made oneDNN drift 27% from the simulation
    assert res.agreement["paddle_rel_err"] < 0.05
    # the projection shortcuts of layer2-4 are signed: their blocks' ReLUs (and those after them) become
    # leaky_relu(0) so that oneDNN's s8 output of conv + residual + act gets an s8 scale
    manifest = json.loads((tmp_path / "r18" / "slim.json").read_text())
    assert manifest["compression"]["quantization"]["export"]["paddle"]["residual_relus_as_leaky"] == 6


def test_onednn_int8_of_unfolded_bn_resnet_agrees_with_fp32(tmp_path):
    # conv -> batch_norm -> relu -> residual add as Paddle exports it: oneDNN fuses the chain; before the fix
    # the recorded batch_norm scale was applied to the fused output (rel. error 0.23, as Paddle's own static PTQ)
    paddle.seed(1)
    model = paddle.vision.models.resnet18(num_classes=10)
    model.eval()
    src = tmp_path / "fp32" / "model"
    spec = [paddle.static.InputSpec([None, 3, 32, 32], "float32", "x")]
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(model, str(src), input_spec=spec)
    rng = np.random.default_rng(0)
    batches = [rng.random((2, 3, 32, 32)).astype("float32") for _ in range(2)]
    res = quantize_inference_model(src, PTQConfig(fold_bn=False, calibrator="abs_max"), batches, tmp_path / "q", latency_guard=False)
    assert res.agreement["paddle_rel_err"] < 0.05


def test_adaptive_pool_to_2x2_stays_float_on_onednn(tmp_path):
    # oneDNN has no INT8 kernel for adaptive pool2d; observing it made the exported model fail to run
    nn = paddle.nn
    paddle.seed(0)
    model = nn.Sequential(nn.Conv2D(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2D(2), nn.Flatten(), nn.Linear(32, 10))
    model.eval()
    rng = np.random.default_rng(0)
    batches = [rng.random((4, 1, 7, 7)).astype("float32") for _ in range(2)]  # 7 -> 2: not divisible
    res = export(quantize(model, PTQConfig(), batches), tmp_path / "ap", formats=("paddle",), latency_guard=False)
    assert res.agreement["paddle_top1_agreement"] >= 0.8  # a rounding-boundary flip may change a near-tie top-1
    assert res.agreement["paddle_rel_err"] < 0.1


def test_export_refuses_unquantized_model_existing_dir_and_4bit(digits, calib, tmp_path):
    with pytest.raises(ConfigError, match="not quantized"):
        export(digits[0], tmp_path / "a")
    q4 = quantize(digits[0], PTQConfig(weight_bits=4), calib)
    with pytest.raises(ExportError, match="8-bit"):
        export(q4, tmp_path / "b")
    (tmp_path / "c").mkdir()
    q8 = quantize(digits[0], PTQConfig(), calib)
    with pytest.raises(OutputExistsError):
        export(q8, tmp_path / "c")


def test_quantize_inference_model_on_a_legacy_file(digits, calib, tmp_path):
    model = digits[0]
    src = tmp_path / "fp32" / "model"
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(model, str(src), input_spec=[paddle.static.InputSpec([None, 1, 8, 8], "float32", "x")])
    res = quantize_inference_model(src, PTQConfig(fold_bn=False, skip_types=("mul",)), calib, tmp_path / "q", latency_guard=False)
    assert len(res.quantized_ops["paddle"]) == 4  # conv2d x2 + matmul_v2 x2
    pred = Predictor(tmp_path / "q", threads=2)
    acc = (pred.run([digits[4]])[0].argmax(1) == digits[5]).mean()
    assert acc >= digits[1] - 0.02
    with pytest.raises(ConfigError, match="skip_layers names 'nope'"):
        quantize_inference_model(src, PTQConfig(skip_layers=("nope",)), calib, tmp_path / "q2")
    res2 = quantize_inference_model(src, PTQConfig(skip_types=("conv2d",)), calib, tmp_path / "q3", latency_guard=False)
    assert [o.split(":")[0] for o in res2.quantized_ops["paddle"]] == ["matmul_v2", "matmul_v2"]


def test_quantize_inference_model_rejects_pir_for_paddle_int8(digits, calib, tmp_path):
    src = tmp_path / "pir" / "model"
    paddle.jit.save(digits[0], str(src), input_spec=[paddle.static.InputSpec([None, 1, 8, 8], "float32", "x")])
    with pytest.raises(ExportError, match="PIR program.*legacy"):
        quantize_inference_model(src, PTQConfig(), calib, tmp_path / "q")


@pytest.mark.parametrize("arch", ["digits_cnn", "mobilenet_v2"])
def test_onnx_qdq_export_has_int8_weights_and_agrees(arch, digits, calib, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    if arch == "digits_cnn":
        model, batches, feed = digits[0], calib, digits[4][:64]
    else:
        paddle.seed(0)
        model = paddle.vision.models.mobilenet_v2(scale=0.5, num_classes=10)
        model.eval()
        rng = np.random.default_rng(0)
        batches = [rng.random((2, 3, 32, 32)).astype("float32") for _ in range(2)]
        feed = batches[0]
    q = quantize(model, PTQConfig(calibrator="abs_max"), batches)
    res = export(q, tmp_path / "out", formats=("paddle", "onnx"), latency_guard=False)
    m = onnx.load(str(tmp_path / "out" / "model.onnx"))
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    assert "BatchNormalization" not in ops  # folded into the conv
    fp = onnx.load(str(next(tmp_path.glob("**/fp32_onnx/model.onnx")))) if list(tmp_path.glob("**/fp32_onnx")) else None
    assert fp is None  # the float ONNX is a temporary, not part of the export
    assert ops.count("Relu") + ops.count("Clip") < {"digits_cnn": 3, "mobilenet_v2": 35}[arch]  # most replaced by the u8 clamp
    dtypes = {i.name: i.data_type for i in m.graph.initializer}
    weights = [n for n in dtypes if ".w_0" in n and n.endswith("_quantized") and "bias" not in n]
    assert weights and all(dtypes[n] == onnx.TensorProto.INT8 for n in weights)
    floats = [n for n in dtypes if dtypes[n] == onnx.TensorProto.FLOAT and ".w_0" in n and not n.endswith("_scale")]
    assert floats == []  # no float copy of any quantized weight
    pred = Predictor(tmp_path / "out", backend="onnxruntime", threads=2)
    got = pred.run([feed])[0]
    with paddle.no_grad():
        ref = q(paddle.to_tensor(feed)).numpy()
    assert rel_err(got, ref) < 0.1
    assert res.agreement["onnx_rel_err"] < 0.1
    manifest = json.loads((tmp_path / "out" / "slim.json").read_text())
    assert set(manifest["artifacts"]) == {"paddle-legacy", "onnx"}


def test_onnx_qdq_keeps_pooling_and_flatten_in_int8(tmp_path):
    # ONNX Runtime runs MaxPool / Reshape in INT8 only when input and output QDQ share one scale, and fuses
    # GlobalAveragePool only when every reader (the Shape of paddle2onnx's flatten too) takes the dequantized tensor
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    nn = paddle.nn
    paddle.seed(0)
    model = nn.Sequential(
        nn.Conv2D(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2), nn.Conv2D(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip
    model.eval()
    rng = np.random.default_rng(0)
    batches = [rng.random((4, 3, 16, 16)).astype("float32") for _ in range(2)]
    q = quantize(model, PTQConfig(), batches)
    res = export(q, tmp_path / "out", formats=("onnx",), latency_guard=False)
    assert res.agreement["onnx_rel_err"] < 0.05
    m = onnx.load(str(tmp_path / "out" / "model.onnx"))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    for n in m.graph.node:
        if n.op_type in ("MaxPool", "Reshape", "Flatten"):
            dq_in = producer[n.input[0]]
            q_out = next(c for c in m.graph.node if n.output[0] in c.input and c.op_type == "QuantizeLinear")
            assert dq_in.op_type == "DequantizeLinear"
            assert inits[dq_in.input[1]] == inits[q_out.input[1]], n.op_type
        if n.op_type == "Add":  # the Linear bias: no QDQ between MatMul and its constant add
            assert all(producer.get(i) is None or producer[i].op_type == "MatMul" for i in n.input)
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    float_ops = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node if n.domain in ("", "ai.onnx")}
    assert not float_ops & {"MaxPool", "GlobalAveragePool", "Conv"}, float_ops


def test_onednn_int8_concat_network_agrees_with_simulation(tmp_path):
    # oneDNN's INT8 concat takes its output scale for every input: with a recorded concat scale ShuffleNetV2
    # (split -> branch -> concat -> channel shuffle) ran 29% away from the simulation
    paddle.seed(0)
    model = paddle.vision.models.shufflenet_v2_x0_25(num_classes=10)
    model.eval()
    rng = np.random.default_rng(0)
    batches = [rng.random((2, 3, 64, 64)).astype("float32") for _ in range(2)]
    res = export(quantize(model, PTQConfig(), batches), tmp_path / "s", formats=("paddle",), latency_guard=False)
    assert res.agreement["paddle_rel_err"] < 0.1


class _SE(paddle.nn.Layer):
    """PaddleClas-style squeeze-excitation: pooled gate applied with paddle.multiply."""

    def __init__(self, c):
        super().__init__()
        self.pool = paddle.nn.AdaptiveAvgPool2D(1)
        self.fc1 = paddle.nn.Conv2D(c, c // 4, 1)
        self.fc2 = paddle.nn.Conv2D(c // 4, c, 1)

    def forward(self, x):
        s = paddle.nn.functional.hardsigmoid(self.fc2(paddle.nn.functional.relu(self.fc1(self.pool(x)))))
        return paddle.multiply(x, s)


def _se_cnn():
    nn = paddle.nn
    paddle.seed(1)
    model = nn.Sequential(
        nn.Conv2D(3, 16, 3, padding=1), nn.BatchNorm2D(16), nn.ReLU(), _SE(16), nn.Conv2D(16, 16, 3, stride=2, padding=1),
        nn.ReLU(), nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip
    model.eval()
    return model


def _need_onnxruntime_and_openvino():
    pytest.importorskip("onnxruntime")
    if not __import__("slim_core.runtime", fromlist=["runtime_available"]).runtime_available("openvino"):
        pytest.skip("openvino is not installed (pip install 'slim-quant[openvino]')")


def test_onnx_export_is_verified_on_openvino_with_int8_layer_count(tmp_path):
    _need_onnxruntime_and_openvino()
    rng = np.random.default_rng(0)
    batches = [rng.random((4, 3, 16, 16)).astype("float32") for _ in range(2)]
    q = quantize(_se_cnn(), PTQConfig(), batches)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LatencyGuardWarning)  # a 16x16 model is all overhead
        res = export(q, tmp_path / "out", formats=("onnx",), threads=1)
    ov = res.runtimes["openvino"]
    assert ov["measured"] and ov["compute_layers"] > 0
    # the QDQ convolutions and the classifier run in INT8 on OpenVINO's CPU plugin
    assert ov["int8_layers"] >= 2 and set(res.int8_ops) == {"onnx"}  # int8_ops stays per format
    assert ov["by_type"]["Convolution"]["int8"] >= 2
    assert res.agreement["openvino_cosine"] > 0.99 and res.agreement["openvino_rel_err"] < 0.1
    assert abs(res.agreement["openvino_rel_err"] - res.agreement["onnx_rel_err"]) < 0.05  # same QDQ file, same numbers
    assert {"onnxruntime_fp32", "onnxruntime_int8", "openvino_fp32", "openvino_int8"} <= set(res.latency_ms)
    ver = json.loads((tmp_path / "out" / "slim.json").read_text())["verification"]
    assert ver["runtimes"]["openvino"]["int8_layers"] == ov["int8_layers"]
    assert "openvino_fp32" in ver["latency_ms_batch1"] and "openvino_cosine" in ver


def test_onnx_export_without_openvino_records_it_unmeasured(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import slim_core.runtime

    monkeypatch.setattr(slim_core.runtime, "runtime_available", lambda name: name != "openvino")
    rng = np.random.default_rng(0)
    batches = [rng.random((2, 3, 16, 16)).astype("float32")]
    res = export(quantize(_se_cnn(), PTQConfig(), batches), tmp_path / "out", formats=("onnx",), latency_guard=False)
    assert res.runtimes["openvino"]["measured"] is False and "not installed" in res.runtimes["openvino"]["reason"]
    assert not any(k.startswith("openvino") for k in res.agreement | res.latency_ms)
    ver = json.loads((tmp_path / "out" / "slim.json").read_text())["verification"]
    assert ver["runtimes"]["openvino"]["measured"] is False


def test_onnx_export_laid_out_for_openvino_drops_float_read_output_qdq(tmp_path):
    """onnx_target="openvino": no QDQ on quantized outputs that hardswish / an SE gate read in float; OpenVINO then
    runs fewer layers (no requantize + dequantize after each such conv), every conv still in INT8, same outputs."""
    from slim_core.testing import clas_style_net

    _need_onnxruntime_and_openvino()
    rng = np.random.default_rng(0)
    batches = [rng.random((4, 3, 32, 32)).astype("float32") for _ in range(2)]
    q = quantize(clas_style_net(), PTQConfig(), batches)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExportQualityWarning)  # a 32x32 model's QDQ file is larger than its float one
        res = {
            t: export(q, tmp_path / t, formats=("onnx",), latency_guard=False, threads=1, onnx_target=t)
            for t in ("onnxruntime", "openvino")
        }
    ort_ov, ov_ov = res["onnxruntime"].runtimes["openvino"], res["openvino"].runtimes["openvino"]
    conv = ov_ov["by_type"]["Convolution"]
    assert conv["int8"] == conv["total"] == ort_ov["by_type"]["Convolution"]["int8"] > 0
    assert ov_ov["compute_layers"] < ort_ov["compute_layers"]
    assert res["openvino"].qdq_tensors["onnx"] < res["onnxruntime"].qdq_tensors["onnx"]
    assert res["openvino"].int8_ops == res["onnxruntime"].int8_ops
    for key in ("onnx_cosine", "openvino_cosine"):  # both files agree with the fake-quant layer on both runtimes
        assert res["openvino"].agreement[key] > 0.99 and res["onnxruntime"].agreement[key] > 0.99
    rec = json.loads((tmp_path / "openvino" / "slim.json").read_text())["compression"]["quantization"]["export"]["onnx"]
    assert rec["target_runtime"] == "openvino"


def test_quant_plan_rejects_an_unknown_target_runtime():
    from slim_quant.graph_passes import QuantPlan

    with pytest.raises(ConfigError, match="openvino"):
        QuantPlan(target_runtime="openvno")
