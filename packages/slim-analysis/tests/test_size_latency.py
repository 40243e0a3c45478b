"""model_size, measured latency, the latency predictor and `slim analyze`."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import paddle
import pytest
from _analysis_testing import SmallCNN

import slim_analysis as sa
import slim_core
from slim_core.cli import main


class Int8Buffer(paddle.nn.Layer):
    """A layer that stores an int8 tensor as a persistable buffer (as int8 weights are stored)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = paddle.nn.Linear(8, 4)
        self.register_buffer("q", paddle.to_tensor(np.arange(32, dtype="int8").reshape(8, 4)), persistable=True)

    def forward(self, x):
        return self.fc(x) + paddle.matmul(x, self.q.astype("float32"))


def test_model_size_by_dtype(tmp_path):
    net = Int8Buffer()
    paddle.jit.save(net, str(tmp_path / "model"), input_spec=[paddle.static.InputSpec([None, 8], "float32", "x")])
    s = sa.model_size(tmp_path / "model")
    assert s.by_dtype["int8"].elements == 32 and s.by_dtype["int8"].bytes == 32
    assert s.by_dtype["float32"].elements == 8 * 4 + 4 and s.by_dtype["float32"].bytes == 36 * 4
    assert s.total_bytes == s.model_file_bytes + s.params_file_bytes > 0
    assert "int8" in str(s) and json.loads(json.dumps(s.to_dict()))["by_dtype"]["int8"]["tensors"] == 1


def test_model_size_legacy(tmp_path, small_cnn):
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(small_cnn, str(tmp_path / "model"), input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32", "x")])
    s = sa.model_size(tmp_path)
    assert s.files[0].endswith(".pdmodel") and s.by_dtype["float32"].elements == sa.params(small_cnn)


def test_model_size_missing_and_damaged(tmp_path, saved_small_cnn):
    with pytest.raises(slim_core.ModelLoadError, match="not found"):
        sa.model_size(tmp_path / "nope")
    params = saved_small_cnn.with_suffix(".pdiparams")
    data = params.read_bytes()
    params.write_bytes(data[: len(data) // 2])
    with pytest.raises(slim_core.ModelLoadError):
        sa.model_size(saved_small_cnn)


@pytest.mark.parametrize("damage", ["no-params", "empty-model", "garbage-model", "garbage-params", "swapped-params"])
def test_model_size_never_reports_a_broken_model(tmp_path, damage):
    paddle.jit.save(Int8Buffer(), str(tmp_path / "model"), input_spec=[paddle.static.InputSpec([None, 8], "float32", "x")])
    paddle.jit.save(paddle.nn.Linear(3, 2), str(tmp_path / "other"), input_spec=[paddle.static.InputSpec([None, 3], "float32", "x")])
    model, params = tmp_path / "model.json", tmp_path / "model.pdiparams"
    rng = np.random.default_rng(0)
    if damage == "no-params":
        params.unlink()
    elif damage == "empty-model":
        model.write_bytes(b"")
    elif damage == "garbage-model":
        model.write_bytes(rng.bytes(model.stat().st_size))
    elif damage == "garbage-params":
        params.write_bytes(rng.bytes(params.stat().st_size))
    else:
        params.write_bytes((tmp_path / "other.pdiparams").read_bytes())
    with pytest.raises(slim_core.ModelLoadError, match="model"):
        sa.model_size(tmp_path / "model")


def test_latency_paddle_inference_layer_and_path(saved_small_cnn):
    small_cnn = SmallCNN()
    small_cnn.train()
    r = sa.latency(small_cnn, [1, 3, 8, 8], batch_sizes=(1, 4), threads=1, warmup=1, repeats=3)
    assert set(r.results) == {1, 4} and r.backend == "paddle"
    s = r.results[4]
    assert 0 < s.min_ms <= s.median_ms <= s.p90_ms + 1e-9 and s.runs == 3
    assert small_cnn.training and "forward" not in small_cnn._original_funcs  # the Layer is left as it was
    assert "| 4 |" in r.to_markdown() and json.loads(json.dumps(r.to_dict()))["results"]["1"]["runs"] == 3
    r2 = sa.latency(saved_small_cnn, [1, 3, 8, 8], warmup=0, repeats=2)
    assert r2.median_ms() > 0


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("paddle2onnx") is None,
    reason="onnxruntime/paddle2onnx not installed",
)
def test_latency_onnxruntime(small_cnn):
    r = sa.latency(small_cnn, [1, 3, 8, 8], backend="onnxruntime", warmup=1, repeats=3)
    assert r.backend == "onnxruntime" and r.median_ms() > 0


@pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None or importlib.util.find_spec("paddle2onnx") is None,
    reason="openvino/paddle2onnx not installed: pip install 'slim-analysis[openvino]'",
)
def test_latency_and_latency_table_on_openvino(small_cnn, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIM_CACHE_DIR", str(tmp_path / "cache"))
    r = sa.latency(small_cnn, [1, 3, 8, 8], backend="openvino", batch_sizes=(1, 2), warmup=1, repeats=3)
    assert r.backend == "openvino" and set(r.results) == {1, 2} and r.median_ms(2) > 0
    pred = sa.LatencyPredictor.build([(small_cnn, [1, 3, 8, 8])], threads=1, backend="openvino", warmup=1, repeats=2, max_signatures=2)
    assert pred.backend == "openvino" and pred.entries
    assert sa.LatencyPredictor.load(pred.save(tmp_path / "t.json")).backend == "openvino"


def test_latency_missing_runtime_names_the_extra(small_cnn, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail like an absent package
    with pytest.raises(slim_core.errors.MissingExtraError, match=r"slim-analysis\[openvino\]"):
        sa.latency(small_cnn, [1, 3, 8, 8], backend="openvino", warmup=0, repeats=1)


def test_latency_bad_settings(small_cnn):
    with pytest.raises(slim_core.ConfigError, match="onnxruntime"):
        sa.latency(small_cnn, [1, 3, 8, 8], backend="tensorrt")
    with pytest.raises(slim_core.ConfigError, match="threads"):
        sa.latency(small_cnn, [1, 3, 8, 8], threads=0)
    with pytest.raises(slim_core.ConfigError, match="batch_sizes"):
        sa.LatencyConfig(batch_sizes=())
    with pytest.raises(slim_core.DataError, match="expected shape"):
        sa.latency(small_cnn, [1, 5, 8, 8])


def test_latency_predictor_build_save_load_predict(tmp_path):
    paddle.seed(0)
    a = SmallCNN()
    pred = sa.LatencyPredictor.build([(a, [1, 3, 8, 8])], threads=1, warmup=1, repeats=3)
    assert len(pred.entries) >= 5 and pred.scale > 0 and pred.overhead_ms > 0
    path = pred.save(tmp_path / "table.json")
    data = json.loads(path.read_text())
    assert data["format"] == "slim-latency-table/1" and data["entries"][0]["signature"][0].startswith("pd_op.")
    loaded = sa.LatencyPredictor.load(path)
    same = loaded.predict(a, [1, 3, 8, 8])
    assert same.coverage == 1.0 and same.total_ms == pytest.approx(pred.predict(a, [1, 3, 8, 8]).total_ms)
    bigger = loaded.predict(SmallCNN(), [1, 3, 16, 16])  # unseen shapes: per-op-type fits
    assert bigger.coverage < 1.0 and bigger.total_ms > 0
    assert {src for *_, src in bigger.per_op} <= {"table", "fit"}


def test_latency_table_bad_files(tmp_path):
    with pytest.raises(slim_core.ModelLoadError, match="not found"):
        sa.LatencyPredictor.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(slim_core.ModelLoadError, match="not valid JSON"):
        sa.LatencyPredictor.load(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(slim_core.ModelLoadError, match="not a slim latency table"):
        sa.LatencyPredictor.load(bad)
    with pytest.raises(slim_core.ConfigError):
        sa.LatencyPredictor.build([])


def test_cli_analyze_zoo_and_python_file(tmp_path, capsys):
    assert main(["analyze", "zoo:mobilenet_v3_small", "--input-shape", "1,3,32,32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["total_flops"] > 0 and out["summary"]["rows"][0]["name"]
    f = tmp_path / "net.py"
    f.write_text("import paddle\n\ndef build_model():\n    return paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.ReLU())\n")
    assert main(["analyze", str(f), "--input-shape", "1,3,8,8", "--latency", "--repeats", "2"]) == 0
    text = capsys.readouterr().out
    assert "| 0 | Conv2D | 1x4x6x6 |" in text and "Latency (paddle" in text


def test_cli_analyze_inference_model_with_size_and_table(saved_small_cnn, tmp_path, capsys):
    table = tmp_path / "t.json"
    argv = ["analyze", str(saved_small_cnn), "--build-latency-table", str(table), "--predict-latency", str(table)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "Size:" in text and "float32" in text and "Predicted latency" in text and table.exists()


def test_cli_analyze_errors(capsys):
    assert main(["analyze", "zoo:resnet18"]) == 2
    assert "--input-shape is required" in capsys.readouterr().err
    assert main(["analyze", "zoo:resnet18", "--input-shape", "1,3,x"]) == 2
    assert main(["analyze", "zoo:nonet", "--input-shape", "1,3,8,8"]) == 2
    assert "unknown paddle.vision model" in capsys.readouterr().err


def test_model_size_of_a_program_without_parameters(tmp_path):
    class NoParams(paddle.nn.Layer):
        def forward(self, x):
            return x * 2.0

    paddle.jit.save(NoParams(), str(tmp_path / "m"), input_spec=[paddle.static.InputSpec([None, 4], "float32", "x")])
    s = sa.model_size(tmp_path / "m")
    assert s.params_file_bytes == 0 and s.total_bytes == s.model_file_bytes > 0 and s.parameters == 0
