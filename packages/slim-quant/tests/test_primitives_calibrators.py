import numpy as np
import paddle
import pytest

from slim_core.errors import ConfigError, DataError
from slim_quant import CALIBRATORS, Calibrator, make_calibrator
from slim_quant.primitives import dequantize_np, fake_quant, qmax, quantize_np, weight_thresholds


def test_per_channel_round_trip_error_is_half_a_step():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4, 3, 3)).astype("float32") * np.arange(1, 9, dtype="float32")[:, None, None, None]
    t = weight_thresholds(w, axis=0)
    q = quantize_np(w, t, axis=0)
    assert q.dtype == np.int8 and np.abs(q).max() == qmax(8)
    err = np.abs(dequantize_np(q, t, axis=0) - w)
    assert (err <= (t / 127)[:, None, None, None] / 2 + 1e-6).all()


def test_per_channel_beats_per_tensor_on_uneven_channels():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 32)).astype("float32") * np.geomspace(0.01, 10, 32, dtype="float32")[None, :]
    pc = dequantize_np(quantize_np(w, weight_thresholds(w, 1), axis=1), weight_thresholds(w, 1), axis=1)
    t = weight_thresholds(w, None)
    pt = dequantize_np(quantize_np(w, t), t)
    assert np.mean((pc - w) ** 2) < 0.2 * np.mean((pt - w) ** 2)


def test_mse_weight_threshold_clips_outliers_and_lowers_error():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 4096)).astype("float32")
    w[:, 0] = 30.0
    t_abs = weight_thresholds(w, 0, bits=4)
    t_mse = weight_thresholds(w, 0, method="mse", bits=4)
    assert (t_mse < t_abs).all()
    e_abs = np.mean((dequantize_np(quantize_np(w, t_abs, 4, 0), t_abs, 4, 0) - w) ** 2)
    e_mse = np.mean((dequantize_np(quantize_np(w, t_mse, 4, 0), t_mse, 4, 0) - w) ** 2)
    assert e_mse < e_abs


def test_fake_quant_has_straight_through_gradient():
    x = paddle.to_tensor(np.linspace(-2, 2, 11).astype("float32"), stop_gradient=False)
    y = fake_quant(x, 1.0)
    assert np.allclose(y.numpy()[[0, -1]], [-1.0, 1.0])
    y.sum().backward()
    assert np.allclose(x.grad.numpy(), 1.0)


def _relu_normal(seed, n=4):
    rng = np.random.default_rng(seed)
    return [np.maximum(rng.standard_normal(20000).astype("float32") * (1 + 0.3 * i), 0) for i in range(n)]


@pytest.mark.parametrize("name", ["abs_max", "avg", "percentile", "kl", "mse"])
def test_each_calibrator_gives_a_sane_threshold(name):
    batches = _relu_normal(0)
    cal = make_calibrator(name)
    for b in batches:
        cal.observe(b)
    t = cal.threshold()
    amax = max(float(b.max()) for b in batches)
    assert 0.0 < t <= amax + 1e-6
    assert cal.non_negative
    if name == "abs_max":
        assert t == pytest.approx(amax)
    if name == "avg":
        assert t == pytest.approx(np.mean([b.max() for b in batches]))
    if name in ("percentile", "kl"):
        assert t < amax  # these clip the tail
    if name in ("percentile", "kl", "mse"):
        assert t > 3.0  # and keep the bulk of a (ReLU'd) normal: exact zeros must not pull it down


def test_percentile_matches_numpy_after_rebinning():
    rng = np.random.default_rng(3)
    data = [rng.standard_normal(50000).astype("float32") * s for s in (1.0, 3.0, 0.5)]  # range grows: re-binning
    cal = make_calibrator("percentile", percentile=99.0)
    for d in data:
        cal.observe(d)
    assert cal.hist.sum() == sum(d.size for d in data)
    want = np.percentile(np.abs(np.concatenate(data)), 99.0)
    assert cal.threshold() == pytest.approx(want, rel=0.03)


def test_calibrator_rejects_nan():
    cal = make_calibrator("kl")
    with pytest.raises(DataError, match="NaN or inf"):
        cal.observe(np.array([1.0, np.nan], "float32"))


def test_registry_unknown_name_and_custom_calibrator():
    with pytest.raises(ConfigError, match="unknown calibrator 'kll'.*did you mean 'kl'"):
        make_calibrator("kll")

    @CALIBRATORS.register("half_max_test")
    class Half(Calibrator):
        def threshold(self):
            return self.abs_max / 2

    try:
        cal = make_calibrator("half_max_test")
        cal.observe(np.array([4.0]))
        assert cal.threshold() == 2.0
    finally:
        del CALIBRATORS["half_max_test"]
