"""The oneDNN INT8 path on a legacy program quantized by Paddle's own static PTQ (not slim-quant)."""

from __future__ import annotations

import paddle
import pytest

import slim_deploy
from slim_core.demo import build_tiny_cnn, load_digits
from slim_core.testing import paddle_static_ptq
from slim_deploy import Predictor, compare, has_quant_ops, read_manifest, write_manifest


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    paddle.seed(0)
    model = build_tiny_cnn(width=8)
    model.eval()
    x, _ = load_digits("test")
    x = x[:64]
    root = tmp_path_factory.mktemp("int8")
    slim_deploy.export(model, root / "fp32", [None, 1, 8, 8], format="paddle-legacy")
    paddle_static_ptq(root / "fp32", root / "int8", [x[i : i + 16] for i in range(0, 64, 16)])
    return model, x, root


def test_int8_detected_and_run_with_onednn(quantized):
    model, x, root = quantized
    assert has_quant_ops(root / "int8" / "model_legacy.pdmodel")
    assert not has_quant_ops(root / "fp32" / "model_legacy.pdmodel")
    pred = Predictor(root / "int8", threads=1)
    assert pred.int8 and pred.format == "paddle-legacy" and "oneDNN INT8" in pred.describe()
    r = compare(model, pred, [x])
    assert r.cosine > 0.98 and r.top1_agreement >= 0.85, str(r)
    simulated = Predictor(root / "int8", threads=1, int8=False)
    assert not simulated.int8
    r2 = compare(simulated, pred, [x])
    assert r2.cosine > 0.98, str(r2)


def test_manifest_for_files_written_by_another_package(quantized):
    _, x, root = quantized
    m = write_manifest(
        root / "int8",
        [{"name": "x", "shape": [-1, 1, 8, 8], "dtype": "float32"}],
        compression={"quantization": {"method": "ptq", "bits": 8, "algo": "abs_max"}},
    )
    assert m.format == "paddle-legacy" and m.int8 is True
    back = read_manifest(root / "int8")
    assert back.compression == {"quantization": {"method": "ptq", "bits": 8, "algo": "abs_max"}}
    assert back.parameters["count"] > 0
    pred = Predictor(root / "int8", threads=1)
    assert pred.int8 and pred.manifest is not None
    assert pred(x[:5]).shape == (5, 10)
