from __future__ import annotations

import json
import sys

import numpy as np
import paddle
import pytest
from conftest import FORMATS, inputs_for, layer_out

import slim_deploy
from slim_core import ConfigError, DataError, ExportError, OutputExistsError
from slim_deploy import MissingExtraError, Predictor, VerificationError


def small_cnn():
    return paddle.nn.Sequential(
        paddle.nn.Conv2D(3, 4, 3, padding=1),
        paddle.nn.BatchNorm2D(4),
        paddle.nn.ReLU(),
        paddle.nn.Flatten(),
        paddle.nn.Linear(4 * 8 * 8, 5),
    )


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch", [1, 5], ids=lambda b: f"batch{b}")
def test_round_trip_within_1e4(exported, fmt, batch):
    model, spec, result = exported
    x = inputs_for(spec, batch, seed=batch)
    ref = layer_out(model, x)
    pred = Predictor(result.path, backend="onnxruntime" if fmt == "onnx" else "paddle", format=fmt, threads=1)
    out = pred(x)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_manifest_contents(exported):
    model, spec, result = exported
    data = json.loads((result.path / "slim.json").read_text())
    assert data["format"] == "paddle"
    assert set(data["artifacts"]) == set(FORMATS)
    assert data["inputs"] == [{"name": "x", "shape": [-1] + spec[1:], "dtype": "float32"}]
    assert data["compression"] == {"note": "none"}
    assert data["int8"] is False
    n_params = len(model.state_dict())
    assert data["parameters"]["count"] == n_params
    assert data["parameters"]["dtypes"] == {"float32": n_params}
    assert set(data["verification"]) == set(FORMATS)
    assert all(v["max_abs_err"] < 1e-4 * max(1.0, 1.0) * 1e3 for v in data["verification"].values())
    assert data["versions"]["slim-deploy"] == slim_deploy.__version__ and "paddlepaddle" in data["versions"]
    assert len(data["outputs"]) == 1
    m = slim_deploy.read_manifest(result.path)
    assert m.to_dict() == data
    assert sorted(p.name for p in result.path.iterdir()) == sorted(
        ["slim.json", "model.json", "model.pdiparams", "model_legacy.pdmodel", "model_legacy.pdiparams", "model.onnx"]
    )


def test_export_leaves_model_untouched_and_mode_restored(tmp_path):
    model = small_cnn()
    model.train()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    slim_deploy.export(model, tmp_path / "m", [None, 3, 8, 8])
    assert model.training
    assert all(np.array_equal(before[k], v.numpy()) for k, v in model.state_dict().items())


def test_fixed_batch_export_runs_any_multiple(tmp_path):
    model = small_cnn()
    model.eval()
    r = slim_deploy.export(model, tmp_path / "m", [2, 3, 8, 8], dynamic_batch=False)
    assert r.manifest.inputs[0]["shape"] == [2, 3, 8, 8]
    x = inputs_for([None, 3, 8, 8], 6)
    np.testing.assert_allclose(Predictor(r.path)(x), layer_out(model, x), atol=1e-5)


def test_multi_input_model(tmp_path):
    class TwoIn(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.fc = paddle.nn.Linear(6, 3)

        def forward(self, a, b):
            return self.fc(paddle.concat([a, b], axis=1)), a.sum(axis=1)

    model = TwoIn()
    r = slim_deploy.export(model, tmp_path / "m", {"a": [None, 4], "b": [None, 2]}, format=["paddle", "onnx"])
    a, b = np.ones((3, 4), "float32"), np.ones((3, 2), "float32")
    for fmt in ("paddle", "onnx"):
        pred = Predictor(r.path, backend="onnxruntime" if fmt == "onnx" else "paddle", format=fmt)
        assert pred.input_names == ["a", "b"]
        outs = pred(a, b)
        assert isinstance(outs, list) and len(outs) == 2
        np.testing.assert_allclose(outs[0], model(paddle.to_tensor(a), paddle.to_tensor(b))[0].numpy(), atol=1e-5)


# bad input: each a clear error and nothing written ------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, err, words",
    [
        ({"format": "tflite"}, ConfigError, "allowed"),
        ({"format": ["paddle", "pdmodel"]}, ConfigError, "allowed"),
        ({"input_spec": None}, ConfigError, "input_spec is required"),
        ({"input_spec": [None, 3, 0, 8]}, ConfigError, "dimension 2"),
        ({"input_spec": "3x8x8"}, ConfigError, "must be a shape"),
        ({"input_spec": [[None, 3, 8, 8], "x"]}, ConfigError, "not an input spec"),
        ({"input_spec": [[None, 3, 8, 8], [None, 3, 8, 8]]}, ConfigError, "forward takes"),
        ({"input_spec": ([None, 3, 8, 8], "complex7")}, ConfigError, "dtype"),
        ({"input_spec": [None, 5, 8, 8]}, ExportError, "could not export"),
        ({"compression": {"f": object()}}, ConfigError, "JSON"),
        ({"compression": ["ptq"]}, ConfigError, "must be a dict"),
    ],
    ids=[
        "unknown-format",
        "unknown-format-in-list",
        "no-spec",
        "zero-dim",
        "spec-string",
        "spec-item-string",
        "too-many-inputs",
        "bad-dtype",
        "wrong-channels",
        "compression-not-json",
        "compression-not-dict",
    ],
)
def test_bad_export_arguments(tmp_path, kwargs, err, words):
    args = {"input_spec": [None, 3, 8, 8], "format": "paddle"} | kwargs
    out = tmp_path / "m"
    with pytest.raises(err, match=words):
        slim_deploy.export(small_cnn(), out, **args)
    assert list(tmp_path.iterdir()) == []


def test_refuses_overwrite_then_overwrites(tmp_path):
    out = tmp_path / "m"
    slim_deploy.export(small_cnn(), out, [None, 3, 8, 8])
    stamp = (out / "slim.json").read_text()
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        slim_deploy.export(small_cnn(), out, [None, 3, 8, 8], format="onnx")
    assert (out / "slim.json").read_text() == stamp
    slim_deploy.export(small_cnn(), out, [None, 3, 8, 8], format="onnx", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "slim.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary leftovers


def test_onnx_without_extra_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "paddle2onnx", None)  # makes `import paddle2onnx` fail like an absent package
    with pytest.raises(MissingExtraError, match=r"slim-deploy\[onnx\]"):
        slim_deploy.export(small_cnn(), tmp_path / "m", [None, 3, 8, 8], format=["paddle", "onnx"])
    assert list(tmp_path.iterdir()) == []


def test_verification_failure_writes_nothing(tmp_path):
    class Noisy(paddle.nn.Layer):
        """Dropout stays random only in dygraph train mode; a layer that differs between eager and traced runs."""

        def __init__(self):
            super().__init__()
            self.fc = paddle.nn.Linear(4, 4)

        def forward(self, x):
            if paddle.in_dynamic_mode():
                return self.fc(x) + 1.0
            return self.fc(x)

    with pytest.raises(VerificationError, match="differs from the source"):
        slim_deploy.export(Noisy(), tmp_path / "m", [None, 4])
    assert list(tmp_path.iterdir()) == []


def test_not_a_layer(tmp_path):
    with pytest.raises(ConfigError, match="paddle.nn.Layer"):
        slim_deploy.export(lambda x: x, tmp_path / "m", [None, 4])


def test_verify_data_used(tmp_path):
    model = small_cnn()
    model.eval()
    x = inputs_for([None, 3, 8, 8], 5)
    r = slim_deploy.export(model, tmp_path / "m", [None, 3, 8, 8], verify_data=x)
    assert r.verification["paddle"].samples == 5
    with pytest.raises(ConfigError, match="verify_data holds 2"):
        slim_deploy.export(model, tmp_path / "n", [None, 3, 8, 8], verify_data=[x, x])


class TinyEncoder(paddle.nn.Layer):
    """Token ids -> embedding -> 2 transformer encoder layers -> mean pool -> 3 logits."""

    def __init__(self):
        super().__init__()
        self.emb = paddle.nn.Embedding(50, 32)
        self.enc = paddle.nn.TransformerEncoder(paddle.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0), 2)
        self.head = paddle.nn.Linear(32, 3)

    def forward(self, ids):
        return self.head(self.enc(self.emb(ids)).mean(axis=1))


def test_transformer_encoder_round_trip(tmp_path):
    paddle.seed(0)
    model = TinyEncoder()
    model.eval()
    # legacy export of nn.MultiHeadAttention fails inside Paddle 3.3.1 (matmul gets a Variable), so PIR + ONNX here
    r = slim_deploy.export(model, tmp_path / "enc", ([None, 16], "int64"), format=["paddle", "onnx"])
    assert r.manifest.inputs == [{"name": "x", "shape": [-1, 16], "dtype": "int64"}]
    ids = np.random.default_rng(0).integers(0, 50, (5, 16))
    ref = model(paddle.to_tensor(ids)).numpy()
    for fmt in ("paddle", "onnx"):
        pred = Predictor(r.path, backend="onnxruntime" if fmt == "onnx" else "paddle", format=fmt, threads=1)
        np.testing.assert_allclose(pred(ids), ref, atol=1e-4)
        with pytest.raises(DataError, match="integer"):
            pred(ids.astype("float32"))
