"""PTQ + INT8 export of PaddleClas-style backbones (tests/zoo_models.py) to ONNX QDQ and Paddle oneDNN INT8."""

import json
import warnings

import numpy as np
import paddle
import pytest
import zoo_models

from slim_core.errors import OutputExistsError
from slim_deploy.predictor import Predictor
from slim_quant import ExportQualityWarning, PTQConfig, export, quantize, quantize_inference_model

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _batches(n=2):
    rng = np.random.default_rng(0)
    return [rng.standard_normal((4, 3, 32, 32)).astype("float32") for _ in range(n)]


def _cos(a, b):
    a, b = np.asarray(a, "float64").ravel(), np.asarray(b, "float64").ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("name", sorted(zoo_models.ZOO))
def test_zoo_model_quantizes_and_exports_int8(name, tmp_path):
    batches = _batches()
    q = quantize(zoo_models.build(name), PTQConfig(), batches)
    n_layers = len(q.slim_quant_state.layers)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = export(q, tmp_path / name, formats=("paddle", "onnx"), latency_guard=False)
    with paddle.no_grad():
        ref = q(paddle.to_tensor(batches[0])).numpy()
    # ONNX: every quantized layer runs in INT8 on ONNX Runtime and agrees with the fake-quant Layer
    assert "onnx" in res.formats and res.int8_ops["onnx"] == n_layers > 0
    got = Predictor(tmp_path / name, backend="onnxruntime", threads=1).run([batches[0]])[0]
    assert _cos(got, ref) >= 0.99
    assert res.agreement["onnx_cosine"] >= 0.99
    manifest = json.loads((tmp_path / name / "slim.json").read_text())
    export_rec = manifest["compression"]["quantization"]["export"]
    assert manifest["int8"] is True
    # Paddle oneDNN INT8 where Paddle can build the legacy program, else the reason is recorded
    if "paddle" in res.formats:
        assert res.int8_ops["paddle"] == n_layers
        assert set(export_rec["paddle"]) >= {"quantized_ops", "int8_ops", "qdq_tensors"}
        assert res.agreement["paddle_cosine"] >= 0.9
    else:
        reason = res.skipped_formats["paddle"]
        assert reason and manifest["compression"]["quantization"]["skipped_formats"]["paddle"] == reason
        assert any(issubclass(w.category, ExportQualityWarning) and "paddle" in str(w.message) for w in caught)
    assert {k for k in export_rec["onnx"] if k in ("quantized_ops", "int8_ops", "qdq_tensors")} == {
        "quantized_ops",
        "int8_ops",
        "qdq_tensors",
    }
    # int8 weights; a model this tiny is mostly graph, whose q/dq ops can outweigh the int8 savings: the export
    # then says so (the PP-OCR direction classifier: 2.07 MB FP32 -> 0.46 MB INT8 Paddle, see test_export)
    files = {"paddle": ("model_legacy.pdmodel", "model_legacy.pdiparams"), "onnx": ("model.onnx",)}
    for f in res.formats:
        larger = sum(res.file_bytes[n] for n in files[f]) > res.fp32_bytes[f]
        assert larger == any(f"the {f} INT8 model files" in str(w.message) for w in caught)
    if "paddle" in res.formats:
        assert res.file_bytes["model_legacy.pdiparams"] < res.fp32_bytes["paddle"]


class _SumPool(paddle.nn.Layer):
    """A head pooling with ``paddle.sum``, which Paddle 3.3.1 cannot trace into a legacy program."""

    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 8, 3, padding=1)
        self.fc = paddle.nn.Linear(8, 10)

    def forward(self, x):
        x = paddle.nn.functional.relu(self.conv(x))
        return self.fc(paddle.sum(x, axis=[2, 3]) / 1024.0)


def test_paddle_format_skipped_with_reason_keeps_onnx(tmp_path):
    paddle.seed(0)
    model = _SumPool()
    model.eval()
    q = quantize(model, PTQConfig(), _batches())
    with pytest.warns(ExportQualityWarning, match="'paddle' was not written"):
        res = export(q, tmp_path / "out", formats=("paddle", "onnx"), latency_guard=False)
    assert res.formats == ["onnx"] and res.int8_ops == {"onnx": 2}
    assert "legacy program" in res.skipped_formats["paddle"] and "\n" not in res.skipped_formats["paddle"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx", "slim.json"]
    manifest = json.loads((tmp_path / "out" / "slim.json").read_text())
    assert manifest["verification"]["skipped_formats"] == res.skipped_formats


def test_all_ops_float_is_said_loudly(tmp_path):
    paddle.seed(0)
    model = _SumPool()
    model.eval()
    src = tmp_path / "fp32" / "model"
    paddle.jit.save(model, str(src), input_spec=[paddle.static.InputSpec([None, 3, 32, 32], "float32", "x")])
    x = _batches(1)[0]
    ref = model(paddle.to_tensor(x)).numpy()

    def closeness(pred):  # only the float model reaches 0: max_metric_drop=0 keeps every op in float
        return -float(np.abs(pred.run([x])[0] - ref).max() > 1e-4)

    with pytest.warns(ExportQualityWarning, match="NO INT8 op"):
        res = quantize_inference_model(
            src, PTQConfig(max_metric_drop=0.0), _batches(), tmp_path / "q", formats=("onnx",), eval_fn=closeness, latency_guard=False
        )
    assert res.int8_ops == {"onnx": 0}
    assert json.loads((tmp_path / "q" / "slim.json").read_text())["int8"] is False


@pytest.mark.parametrize("relative", [True, False])
def test_relative_and_absolute_output_paths_behave_the_same(relative, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    q = quantize(zoo_models.build("pplcnet"), PTQConfig(), _batches(1))
    out = "out/int8" if relative else str(tmp_path / "out" / "int8")
    res = export(q, out, formats=("paddle", "onnx"), latency_guard=False)
    assert res.formats == ["paddle", "onnx"] and res.agreement["onnx_cosine"] >= 0.99
    assert sorted(p.name for p in (tmp_path / "out" / "int8").iterdir()) == ["model.onnx", *zoo_models_legacy(), "slim.json"]
    with pytest.raises(OutputExistsError):
        export(q, out, formats=("onnx",), latency_guard=False)
    res2 = export(q, out, formats=("onnx",), overwrite=True, latency_guard=False)  # slim wrote it: may be replaced
    assert res2.formats == ["onnx"] and not (tmp_path / "out" / "int8" / "model_legacy.pdmodel").exists()
    # a directory slim did not write is never replaced, even with overwrite
    foreign = "mine" if relative else str(tmp_path / "mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="not an export directory written by slim"):
        export(q, foreign, formats=("onnx",), overwrite=True, latency_guard=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    # quantize_inference_model on the same kind of paths, from a PIR model: same result keys as export()
    paddle.jit.save(zoo_models.build("pplcnet"), "pir/model", input_spec=[paddle.static.InputSpec([None, 3, 32, 32], "float32", "x")])
    src = "pir/model" if relative else str(tmp_path / "pir" / "model")
    dst = "q" if relative else str(tmp_path / "q")
    res3 = quantize_inference_model(src, PTQConfig(), _batches(1), dst, formats=("paddle", "onnx"), latency_guard=False)
    assert res3.formats == ["onnx"] and "PIR program" in res3.skipped_formats["paddle"]
    assert set(vars(res3)) == set(vars(res)) and res3.int8_ops["onnx"] > 0
    assert res3.agreement["onnx_rel_err_fp32"] == res3.agreement["onnx_rel_err"]  # the reference is the FP32 model


def zoo_models_legacy():
    return ["model_legacy.pdiparams", "model_legacy.pdmodel"]
