import copy

import numpy as np
import paddle
import pytest
from conftest import rel_err

from slim_core import demo
from slim_core.errors import ConfigError, DataError, UnsupportedOpError
from slim_quant import PTQConfig, quantize, quantize_
from slim_quant.layers import QuantedLayer, quanted_layers
from slim_quant.ptq import set_mode


@pytest.mark.parametrize("calibrator", ["abs_max", "avg", "percentile", "kl", "mse"])
def test_each_calibrator_keeps_digits_accuracy(digits, calib, calibrator):
    model, acc, _, _, xt, yt = digits
    q = quantize(model, PTQConfig(calibrator=calibrator), calib)
    assert demo.evaluate(q, xt, yt) >= acc - 0.02
    assert len(quanted_layers(q)) == 4
    assert not any(isinstance(m, QuantedLayer) for m in model.sublayers())  # quantize() left the original alone


def test_bn_is_folded_before_quantization(digits, calib):
    model = digits[0]
    q = quantize(model, PTQConfig(), calib)
    assert sorted(q.slim_quant_state.folded_bn) == [("conv1", "bn1"), ("conv2", "bn2")]
    assert not any(isinstance(m, paddle.nn.BatchNorm2D) for m in q.sublayers())
    q_nofold = quantize(model, PTQConfig(fold_bn=False), calib)
    assert any(isinstance(m, paddle.nn.BatchNorm2D) for m in q_nofold.sublayers())


def _output_error(model, q, x):
    with paddle.no_grad():
        ref = model(paddle.to_tensor(x)).numpy()
        got = q(paddle.to_tensor(x)).numpy()
    return rel_err(got, ref), float(np.abs((got - ref).mean(0)).mean())


def test_per_channel_weights_beat_per_tensor_at_4_bits(digits, calib):
    model, _, _, _, xt, _ = digits
    pc = quantize(model, PTQConfig(weight_bits=4), calib)
    pt = quantize(model, PTQConfig(weight_bits=4, weight_granularity="per_tensor"), calib)
    assert _output_error(model, pc, xt)[0] < _output_error(model, pt, xt)[0]


def test_bias_correction_reduces_the_mean_output_shift(digits, calib):
    model, _, _, _, xt, _ = digits
    plain = quantize(model, PTQConfig(weight_bits=4, weight_granularity="per_tensor"), calib)
    corrected = quantize(model, PTQConfig(weight_bits=4, weight_granularity="per_tensor", bias_correction=True), calib)
    assert corrected.slim_quant_state.metrics["bias_corrected_layers"] == 4
    assert _output_error(model, corrected, xt)[1] < _output_error(model, plain, xt)[1]


def _tiny_resnet():
    return paddle.vision.models.resnet18(num_classes=10)


def test_resnet18_is_quantized_with_folding_and_small_error():
    paddle.seed(0)
    model = _tiny_resnet()
    model.eval()
    rng = np.random.default_rng(0)
    batches = [rng.random((4, 3, 32, 32)).astype("float32") for _ in range(3)]
    q = quantize(model, PTQConfig(calibrator="mse"), batches)
    assert len(q.slim_quant_state.folded_bn) == 20
    assert len(q.slim_quant_state.layers) == 21
    assert _output_error(model, q, batches[0])[0] < 0.1


def test_skip_by_name_and_type(digits, calib):
    model = digits[0]
    q = quantize(model, PTQConfig(skip_layers=("fc2",), skip_types=("Conv2D",)), calib)
    assert sorted(quanted_layers(q)) == ["fc1"]
    assert q.slim_quant_state.skipped == {"fc2": "skip_layers 'fc2'", "conv1": "skip_types 'Conv2D'", "conv2": "skip_types 'Conv2D'"}


def test_max_metric_drop_skips_sensitive_layers(digits, calib):
    model, _, _, _, xt, yt = digits

    def eval_fn(m):
        return demo.evaluate(m, xt, yt)

    cfg = PTQConfig(weight_bits=2, weight_granularity="per_tensor", max_metric_drop=0.02)
    q = quantize(model, cfg, calib, eval_fn=eval_fn)
    st = q.slim_quant_state
    assert st.metrics["int8_all_layers"] < st.metrics["float"] - 0.02  # 2-bit weights hurt...
    assert st.skipped and all("max_metric_drop" in r for r in st.skipped.values())  # ...so layers were skipped
    assert st.metrics["float"] - st.metrics["int8"] <= 0.02
    assert eval_fn(q) == pytest.approx(st.metrics["int8"])
    assert set(st.skipped).isdisjoint(quanted_layers(q))


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (lambda x: [x[:8] * np.nan], DataError, "NaN"),
        (lambda x: [np.concatenate([x[:8], np.full_like(x[:1], np.inf)])], DataError, "inf"),
        (lambda x: [], DataError, "empty"),
    ],
    ids=["nan", "inf", "empty"],
)
def test_bad_calibration_data_is_rejected_and_model_untouched(digits, bad, error, match):
    model = copy.deepcopy(digits[0])
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=match):
        quantize_(model, PTQConfig(), bad(digits[2]))
    assert not any(isinstance(m, QuantedLayer) for m in model.sublayers())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k].numpy()) for k in before)


def test_unknown_skip_layer_is_an_error(digits, calib):
    with pytest.raises(ConfigError, match="'fc3'.*did you mean 'fc2'"):
        quantize(digits[0], PTQConfig(skip_layers=("fc3",)), calib)


def test_model_without_quantizable_layer():
    model = paddle.nn.Sequential(paddle.nn.ReLU(), paddle.nn.MaxPool2D(2))
    with pytest.raises(UnsupportedOpError, match="no quantizable layer"):
        quantize_(model, PTQConfig(), [np.ones((2, 1, 4, 4), "float32")])


@pytest.mark.parametrize("field, value", [("weight_bits", 16), ("activation_bits", 4), ("weight_bits", 1)], ids=["w16", "a4", "w1"])
def test_unsupported_bit_width(field, value):
    with pytest.raises(ConfigError, match=f"{field}={value} is not a supported bit width"):
        PTQConfig(**{field: value})


def test_config_yaml_round_trip_and_unknown_calibrator():
    cfg = PTQConfig(calibrator="kl", skip_layers=("fc",), bias_correction=True)
    assert PTQConfig.from_yaml(cfg.to_yaml()) == cfg
    with pytest.raises(ConfigError, match="unknown calibrator"):
        PTQConfig(calibrator="entropy")


def test_modes_switch_between_float_and_quant(digits, calib):
    model, _, _, _, xt, _ = digits
    q = quantize(model, PTQConfig(), calib)
    set_mode(q, "float")
    assert _output_error(model, q, xt[:64])[0] < 1e-5  # float mode = the BN-folded float model
    set_mode(q, "quant")
    assert _output_error(model, q, xt[:64])[0] > 1e-4
