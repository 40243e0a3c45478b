from __future__ import annotations

import numpy as np
import paddle
import pytest
from conftest import inputs_for

from slim_core import ConfigError, DataError
from slim_deploy import CompareReport, Predictor, compare


def test_layer_vs_each_format_agree(exported):
    model, spec, result = exported
    data = [inputs_for(spec, 3, seed=s) for s in range(2)]
    for target in (result.path, result.path / "model.onnx", Predictor(result.path, format="paddle-legacy", threads=1)):
        r = compare(model, target, data)
        assert isinstance(r, CompareReport)
        assert r.samples == 6
        assert r.max_abs_err <= 1e-4 * max(1.0, r.outputs[0].max_abs_ref)
        assert r.mean_abs_err <= r.max_abs_err
        assert r.cosine > 0.999999
        assert r.top1_agreement == 1.0
        assert r.within(1e-4)
        assert "top-1 agreement 100.00%" in str(r)


def test_different_models_disagree():
    paddle.seed(1)
    a = paddle.vision.models.resnet18(num_classes=10)
    paddle.seed(2)
    b = paddle.vision.models.resnet18(num_classes=10)
    data = [(inputs_for([None, 3, 32, 32], 16), np.zeros(16))]  # (x, label) tuples: labels ignored
    r = compare(a, b, data)
    assert r.max_abs_err > 1e-3 and not r.within(1e-4)
    assert r.top1_agreement is not None and r.top1_agreement < 1.0
    assert r.cosine < 0.999
    assert r.to_dict()["samples"] == 16


def test_compare_errors():
    lin = paddle.nn.Linear(4, 3)
    two = lambda x: (x, x)  # noqa: E731
    with pytest.raises(DataError, match="output"):
        compare(lin, two, [np.ones((2, 4), "float32")])
    with pytest.raises(DataError, match="empty"):
        compare(lin, lin, [])
    with pytest.raises(ConfigError, match="cannot compare"):
        compare(lin, 42, [np.ones((2, 4), "float32")])
    with pytest.raises(DataError, match="shape"):
        compare(lin, lambda x: x, [np.ones((2, 4), "float32")])
