from __future__ import annotations

import numpy as np
import pytest
from conftest import inputs_for, layer_out

from slim_core import ConfigError
from slim_core.cli import main
from slim_core.runtime import runtime_available
from slim_deploy import benchmark


def test_benchmark_rows_side_by_side(exported):
    _, _, result = exported
    rep = benchmark(result.path, batch_sizes=[1, 2], threads=1, repeat=3, warmup=1)
    paths = [("paddle", "paddle"), ("paddle-legacy", "paddle"), ("onnx", "onnxruntime")]
    if runtime_available("openvino"):  # by default every installed runtime runs every file it reads
        paths = [
            ("paddle", "paddle"),
            ("paddle-legacy", "paddle"),
            ("paddle-legacy", "openvino"),
            ("onnx", "onnxruntime"),
            ("onnx", "openvino"),
        ]
    assert [(r.format, r.backend, r.batch_size) for r in rep.rows] == [(f, rt, b) for b in (1, 2) for f, rt in paths]
    assert all(r.latency.median_ms > 0 and r.latency.runs >= 1 for r in rep.rows)
    table = rep.to_markdown()
    assert table.count("\n") == 1 + len(rep.rows) and "1.00x" in table
    assert rep.to_dict()["rows"][0]["median_ms"] > 0
    fastest = rep.fastest()
    assert set(fastest) == {1, 2}
    for b, row in fastest.items():
        assert row.latency.median_ms == min(r.latency.median_ms for r in rep.rows if r.batch_size == b)
    assert rep.fastest_lines()[0].startswith("fastest at batch 1: ")


def test_benchmark_errors(exported):
    _, _, result = exported
    with pytest.raises(ConfigError, match="batch_sizes"):
        benchmark(result.path, batch_sizes=[0])
    with pytest.raises(ConfigError, match="no 'tflite' model"):
        benchmark(result.path, backends=["tflite"])
    with pytest.raises(ConfigError, match="cannot run the paddle model"):
        benchmark(result.path, backends=["paddle/openvino"])
    with pytest.raises(ConfigError, match="dynamic or non-positive"):
        benchmark(result.path, input_shape=[3, -1, 8])


def test_slim_run_and_bench(exported, tmp_path, capsys):
    model, spec, result = exported
    x = inputs_for(spec, 3)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(result.path), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "paddle running the paddle model" in out and "shape [3, 10]" in out
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), layer_out(model, x), atol=1e-4 * max(1.0, np.abs(layer_out(model, x)).max()))
    assert main(["bench", str(result.path), "-b", "1", "-t", "1", "--repeat", "2", "--backends", "paddle", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "| paddle | paddle | 1 | 1 |" in out and "| onnx | onnxruntime | 1 | 1 |" in out
    assert "fastest at batch 1: " in out


def test_slim_run_bad_input(exported, tmp_path, capsys):
    _, _, result = exported
    assert main(["run", str(result.path), "--input", str(tmp_path / "missing.npy")]) == 2
    assert "input file not found" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros((2, 7), "float32"))
    assert main(["run", str(result.path), "--input", str(tmp_path / "bad.npy")]) == 2
    assert "expects" in capsys.readouterr().err
