import json

import numpy as np
import paddle
import pytest
from conftest import rel_err

from slim_core import demo
from slim_core.errors import ConfigError
from slim_quant import PTQConfig, ReconstructionConfig, quant_sensitivity, quantize


def _mlp():
    paddle.seed(3)
    m = paddle.nn.Sequential(paddle.nn.Linear(64, 48), paddle.nn.ReLU(), paddle.nn.Linear(48, 10))
    m.eval()
    rng = np.random.default_rng(3)
    return m, [rng.standard_normal((32, 64)).astype("float32") for _ in range(3)]


def _error(model, q, x):
    with paddle.no_grad():
        return rel_err(q(paddle.to_tensor(x)).numpy(), model(paddle.to_tensor(x)).numpy())


@pytest.mark.parametrize("method", ["adaround", "qdrop"])
@pytest.mark.parametrize("arch", ["digits_cnn", "mlp"])
def test_learned_rounding_reduces_output_error_vs_nearest(arch, method, digits, calib):
    if arch == "digits_cnn":
        model, batches, x = digits[0], calib[:3], digits[4]
    else:
        model, batches = _mlp()
        x = batches[0]
    nearest = quantize(model, PTQConfig(weight_bits=3), batches)
    rc = ReconstructionConfig(method=method, iters=60 if arch == "digits_cnn" else 300, batches=2)
    learned = quantize(model, PTQConfig(weight_bits=3, reconstruction=rc), batches)
    m = learned.slim_quant_state.metrics
    assert m[f"{method}_output_mse_learned"] < m[f"{method}_output_mse_nearest"]
    assert _error(model, learned, x) < _error(model, nearest, x)


def test_reconstruction_config_validation():
    with pytest.raises(ConfigError, match="iters"):
        ReconstructionConfig(iters=0)
    with pytest.raises(ConfigError, match="not allowed"):
        ReconstructionConfig(method="gptq")


@pytest.mark.parametrize("arch", ["digits_cnn", "mlp"])
def test_sensitivity_ranks_layers_and_saves(arch, digits, calib, tmp_path):
    if arch == "digits_cnn":
        model, batches = digits[0], calib[:2]
    else:
        model, batches = _mlp()
    rep = quant_sensitivity(model, batches, config=PTQConfig(weight_bits=3))
    names = {r.layer for r in rep.layers}
    assert names == ({"conv1", "conv2", "fc1", "fc2"} if arch == "digits_cnn" else {"0", "2"})
    assert rep.float_metric == pytest.approx(0.0, abs=1e-5) and rep.quantized_metric > 0
    ranked = rep.ranked()
    assert ranked[0].cost >= ranked[-1].cost and all(r.only > 0 for r in ranked)
    rep.save(tmp_path / "s.json")
    rep.plot(tmp_path / "s.svg")
    data = json.loads((tmp_path / "s.json").read_text())
    assert [d["layer"] for d in data["layers"]] == [r.layer for r in ranked]
    assert (tmp_path / "s.svg").read_text().startswith("<svg")


def test_sensitivity_with_an_eval_function(digits, calib):
    model, _, _, _, xt, yt = digits
    rep = quant_sensitivity(model, calib[:2], eval_fn=lambda m: demo.evaluate(m, xt, yt), config=PTQConfig(weight_bits=2))
    assert rep.metric == "eval_fn" and rep.higher_is_better
    assert rep.float_metric > rep.quantized_metric
    assert max(r.gain for r in rep.layers) > 0
