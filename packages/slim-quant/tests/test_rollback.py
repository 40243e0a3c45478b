"""In-place quantization verbs finish or leave the model exactly as it was (issue 18, item 9)."""

import numpy as np
import paddle
import pytest
from test_weight_only import _bert, _bert_data

from slim_core.errors import DataError
from slim_core.testing import assert_model_unchanged, clas_style_net, model_fingerprint
from slim_quant import PTQConfig, quantize_
from slim_quant.layers import QuantedLayer
from slim_quant.weight_only import SmoothQuantConfig, WeightOnlyConfig, quantize_weight_only_, smooth_quant_

RNG = np.random.default_rng(0)
CALIB = [RNG.standard_normal((4, 3, 32, 32)).astype("float32") for _ in range(3)]


def _trained_bn(net):
    """BN statistics that differ from the defaults, so a fold visibly changes the conv weights."""
    net.train()
    with paddle.no_grad():
        for x in CALIB:
            net(paddle.to_tensor(x))
    net.eval()
    return net


def test_wrong_input_shape_is_a_data_error_and_the_model_is_restored():
    net = _trained_bn(clas_style_net())
    before = model_fingerprint(net)
    bad = [CALIB[0], RNG.standard_normal((4, 5, 32, 32)).astype("float32")]  # batch 1 has 5 channels
    with pytest.raises(DataError, match=r"\[4, 5, 32, 32\].* in calibration batch 1\b"):
        quantize_(net, PTQConfig(calibrator="abs_max"), bad)
    assert_model_unchanged(before, net)
    assert getattr(net, "slim_quant_state", None) is None


def test_ctrl_c_during_calibration_restores_folded_bn_and_wrappers():
    net = _trained_bn(clas_style_net())
    before = model_fingerprint(net)
    y_before = net(paddle.to_tensor(CALIB[0])).numpy()

    def interrupt_once_wrapped(layer, inputs, output):
        if any(isinstance(m, QuantedLayer) for m in layer.sublayers()):  # calibration has started
            raise KeyboardInterrupt

    handle = net.register_forward_post_hook(interrupt_once_wrapped)
    with pytest.raises(KeyboardInterrupt):
        quantize_(net, PTQConfig(calibrator="abs_max", fold_bn=True), CALIB)
    handle.remove()
    assert_model_unchanged(before, net)
    np.testing.assert_allclose(net(paddle.to_tensor(CALIB[0])).numpy(), y_before, rtol=1e-5, atol=1e-6)


def test_failing_eval_fn_after_quantization_restores_the_model():
    net = _trained_bn(clas_style_net())
    before = model_fingerprint(net)
    calls = []

    def eval_fn(model):
        calls.append(1)
        if len(calls) > 1:  # the first call measures the float model; the second runs on the quantized one
            raise RuntimeError("evaluation server went away")
        return 1.0

    with pytest.raises(RuntimeError, match="server went away"):
        quantize_(net, PTQConfig(calibrator="abs_max", max_metric_drop=0.01), CALIB, eval_fn=eval_fn)
    assert len(calls) == 2
    assert_model_unchanged(before, net)


def test_success_keeps_the_changes():
    net = _trained_bn(clas_style_net())
    quantize_(net, PTQConfig(calibrator="abs_max"), CALIB)
    assert any(isinstance(m, QuantedLayer) for m in net.sublayers())
    assert net.slim_quant_state.folded_bn


@pytest.mark.parametrize(
    "verb,at",
    [
        (lambda m, d: quantize_weight_only_(m, WeightOnlyConfig(bits=4, group_size=32, algo="gptq"), d, input_names=["ids", "mask"]), 2),
        (lambda m, d: smooth_quant_(m, SmoothQuantConfig(alpha=0.5), d, input_names=["ids", "mask"]), 2),
        # smooth_alpha: all 12 Linears smoothed (weights rescaled in place), interrupted at the second quantized one
        (lambda m, d: quantize_weight_only_(m, WeightOnlyConfig(bits=8, smooth_alpha=0.5), d, input_names=["ids", "mask"]), 14),
    ],
    ids=["weight-only-gptq", "smooth-quant", "weight-only-smooth-alpha"],
)
def test_llm_verbs_interrupted_after_the_first_layer_are_undone(verb, at, monkeypatch):
    import slim_quant.weight_only.api as api

    model = _bert()
    model.eval()
    before = model_fingerprint(model)
    real, calls = api.set_sublayer, []

    def interrupt_second(*args):
        calls.append(1)
        if len(calls) == at:  # one Linear is already replaced (and for SmoothQuant a second weight rescaled)
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(api, "set_sublayer", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        verb(model, _bert_data(np.random.default_rng(0), 2))
    assert len(calls) == at
    assert_model_unchanged(before, model)


@pytest.mark.parametrize("fold_bn", [True, False], ids=["fold-bn", "no-fold"])
def test_prepare_qat_on_a_batch_the_model_cannot_take_is_a_slim_error_and_leaves_the_model(fold_bn):
    from slim_core.errors import SlimError
    from slim_quant import QATConfig, prepare_qat

    net = _trained_bn(clas_style_net())
    before = model_fingerprint(net)
    bad = [RNG.standard_normal((4, 5, 32, 32)).astype("float32")]
    with pytest.raises(SlimError, match=r"5, 32, 32"):
        prepare_qat(net, QATConfig(fold_bn=fold_bn, init_from_ptq=False), bad)
    assert_model_unchanged(before, net)
