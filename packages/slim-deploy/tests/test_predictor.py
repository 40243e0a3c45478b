from __future__ import annotations

import numpy as np
import pytest
from conftest import inputs_for, layer_out

from slim_core import ConfigError, DataError, ModelLoadError
from slim_core.runtime import runtime_available
from slim_deploy import Predictor, has_quant_ops


def test_auto_picks_a_measured_equivalent_path_and_says_so(exported):
    model, spec, result = exported
    pred = Predictor(result.path, backend="auto", threads=1)
    expected = [("paddle", "paddle"), ("paddle-legacy", "paddle"), ("onnx", "onnxruntime")]
    if runtime_available("openvino"):  # every installed runtime is measured on every artifact it reads
        expected += [("paddle-legacy", "openvino"), ("onnx", "openvino")]
    assert [(c.format, c.runtime) for c in pred.selection] == expected
    assert all(c.equivalent and c.median_ms and c.median_ms > 0 for c in pred.selection)
    fastest = min(pred.selection, key=lambda c: c.median_ms)
    assert (pred.format, pred.backend) == (fastest.format, fastest.runtime)
    text = pred.describe()
    assert f"{pred.backend} running the {pred.format} model" in text and "measured:" in text
    x = inputs_for(spec, 4)
    ref = layer_out(model, x)
    assert np.abs(pred(x) - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_default_backend_runs_primary_and_int8_off_for_fp32(exported):
    _, _, result = exported
    pred = Predictor(result.path)
    assert (pred.backend, pred.format, pred.int8) == ("paddle", "paddle", False)
    assert not pred.selection
    assert not has_quant_ops(result.path / "model_legacy.pdmodel")
    assert not has_quant_ops(result.path / "model.json")


def test_bare_paddle_prefix_runs_on_onnxruntime_by_conversion(exported, tmp_path):
    model, spec, result = exported
    # a legacy model outside an export directory (no manifest), as other tools write it
    for name in ("model_legacy.pdmodel", "model_legacy.pdiparams"):
        (tmp_path / name.replace("model_legacy", "net")).write_bytes((result.path / name).read_bytes())
    pred = Predictor(tmp_path / "net", backend="onnxruntime", threads=1)
    assert pred.backend == "onnxruntime" and pred.manifest is None
    x = inputs_for(spec, 2)
    ref = layer_out(model, x)
    assert np.abs(pred(x) - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    pred.close()
    with pytest.raises(ConfigError, match="probe"):
        Predictor(tmp_path / "net", backend="auto")
    auto = Predictor(tmp_path / "net", backend="auto", probe=[x])
    assert {c.format for c in auto.selection} == {"paddle-legacy", "onnx"}


def test_bad_inputs_are_clear(exported):
    _, spec, result = exported
    pred = Predictor(result.path, threads=1)
    x = inputs_for(spec, 2)
    with pytest.raises(DataError, match="takes 1 input"):
        pred(x, x)
    with pytest.raises(DataError, match="expects"):
        pred(x[:, :, :-1])
    with pytest.raises(DataError, match="NaN"):
        pred(np.full_like(x, np.nan))
    with pytest.raises(DataError, match="integer|floating"):
        pred(x.astype("int64"))
    np.testing.assert_allclose(pred(x.astype("float64")), pred(x), rtol=1e-6)  # float64 is cast
    np.testing.assert_allclose(pred.run({"x": x})[0], pred(x))
    with pytest.raises(DataError, match="missing input"):
        pred.run({"y": x})


@pytest.mark.parametrize(
    "kwargs, err, words",
    [
        ({"backend": "tensorrt"}, ConfigError, "allowed"),
        ({"threads": 0}, ConfigError, "threads"),
        ({"int8": "yes"}, ConfigError, "int8"),
        ({"format": "tflite"}, ConfigError, "present"),
    ],
    ids=["backend", "threads", "int8", "format"],
)
def test_bad_predictor_arguments(exported, kwargs, err, words):
    with pytest.raises(err, match=words):
        Predictor(exported[2].path, **kwargs)


def test_missing_and_corrupt_files(tmp_path, exported):
    with pytest.raises(ModelLoadError, match="not found"):
        Predictor(tmp_path / "nothing")
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(ModelLoadError, match="bad.onnx is corrupt or not an ONNX model"):
        Predictor(tmp_path / "bad.onnx")
    d = tmp_path / "broken"
    d.mkdir()
    (d / "slim.json").write_text(
        '{"format": "paddle", "artifacts": {"paddle": {"model": "model.json", "params": "model.pdiparams"}}, "inputs": []}'
    )
    with pytest.raises(ModelLoadError, match="missing"):
        Predictor(d)
    (d / "slim.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        Predictor(d)


def test_damaged_or_replaced_files_fail_the_manifest_check(tmp_path, exported):
    import shutil

    _, spec, result = exported
    d = tmp_path / "copy"
    shutil.copytree(result.path, d)
    assert Predictor(d, threads=1)(inputs_for(spec, 1)).shape[0] == 1
    params = d / "model.pdiparams"
    data = bytearray(params.read_bytes())
    data[-3] ^= 0x40  # one flipped bit in a weight: structurally valid, numerically wrong
    params.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"model.pdiparams does not match .*slim.json.*damaged or was replaced"):
        Predictor(d, threads=1)
    with pytest.raises(ModelLoadError, match="does not match"):
        Predictor(d, threads=1, format="onnx")  # every file is checked, whichever is run


def test_truncated_params_never_run_without_a_manifest(tmp_path, exported):
    import shutil

    _, _, result = exported
    for name in ("model.json", "model.pdiparams", "model_legacy.pdmodel", "model_legacy.pdiparams"):
        shutil.copy(result.path / name, tmp_path / name)
    for prefix in ("model", "model_legacy"):
        params = tmp_path / f"{prefix}.pdiparams"
        params.write_bytes(params.read_bytes()[:-8])  # Paddle Inference runs this and returns wrong outputs
        with pytest.raises(ModelLoadError, match="truncated"):
            Predictor(tmp_path / prefix, threads=1)
