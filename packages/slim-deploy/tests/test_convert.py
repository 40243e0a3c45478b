from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import inputs_for, layer_out

from slim_core import ConfigError, OutputExistsError
from slim_deploy import Predictor, convert, read_manifest


def _bare_legacy(result, tmp_path):
    for name in ("model_legacy.pdmodel", "model_legacy.pdiparams"):
        (tmp_path / name.replace("model_legacy", "net")).write_bytes((result.path / name).read_bytes())
    return tmp_path / "net"


@pytest.mark.parametrize("fmt", ["paddle", "onnx"])
def test_legacy_converts_and_verifies(exported, tmp_path, fmt):
    model, spec, result = exported
    x = inputs_for(spec, 3)
    r = convert(_bare_legacy(result, tmp_path), tmp_path / "out", format=fmt, verify_data=x)
    assert r.verification[fmt].max_abs_err <= 1e-4 * max(1.0, np.abs(layer_out(model, x)).max())
    m = read_manifest(r.path)
    assert m.format == fmt and m.inputs[0]["shape"] == [-1] + spec[1:]
    ref = layer_out(model, x)
    out = Predictor(r.path, threads=1)(x)
    assert np.abs(out - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_export_dir_conversion_keeps_compression(exported, tmp_path):
    _, _, result = exported
    r = convert(result.path, tmp_path / "pir", format="paddle")
    assert json.loads((r.path / "slim.json").read_text())["compression"] == {"note": "none"}
    assert r.verification["paddle"].samples == 2


def test_unverified_conversion_of_bare_model_records_unknown_shapes(exported, tmp_path):
    model, spec, result = exported
    r = convert(_bare_legacy(result, tmp_path), tmp_path / "out", format="paddle", verify=False)
    assert r.manifest.inputs[0]["shape"] is None and not r.verification
    x = inputs_for(spec, 2)
    pred = Predictor(r.path, threads=1)
    assert np.abs(pred(x) - layer_out(model, x)).max() <= 1e-4 * max(1.0, np.abs(layer_out(model, x)).max())
    with pytest.raises(ConfigError, match="probe"):
        Predictor(r.path, backend="auto")


def test_convert_errors(exported, tmp_path):
    _, _, result = exported
    bare = _bare_legacy(result, tmp_path)
    with pytest.raises(ConfigError, match="verify_data"):
        convert(bare, tmp_path / "o1", format="paddle")
    with pytest.raises(ConfigError, match="legacy format is not supported"):
        convert(result.path, tmp_path / "o2", format="paddle-legacy")
    with pytest.raises(ConfigError, match="allowed"):
        convert(result.path, tmp_path / "o3", format="tflite")
    with pytest.raises(ConfigError, match="only an ONNX model"):
        convert(result.path / "model.onnx", tmp_path / "o4", format="paddle")
    (tmp_path / "o5").mkdir()
    with pytest.raises(OutputExistsError):
        convert(result.path, tmp_path / "o5", format="onnx")
    assert not any(p.name.startswith(("o1", "o2", "o3", "o4", ".o")) for p in tmp_path.iterdir())
