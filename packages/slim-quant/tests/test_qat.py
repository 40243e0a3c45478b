"""Quantization-aware training: quanters, BN folding, convert, QAT vs PTQ, DataParallel."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest

from slim_core import ConfigError, UnsupportedOpError, demo, set_quiet
from slim_core.testing import assert_close_up_to_flips
from slim_quant.layers import quanted_layers
from slim_quant.qat import QUANTERS, QATConfig, QATLayer, convert, prepare_qat, qat_layers
from slim_quant.qat.quanters import LSQQuanter, PACTQuanter

set_quiet()


@pytest.fixture(scope="module")
def digits_model():
    model, acc = demo.train_demo_model(epochs=3, seed=0)
    x, y = demo.load_digits("train")
    xt, yt = demo.load_digits("test")
    return model, acc, x, y, xt, yt


def _lenet():
    paddle.seed(0)
    return paddle.vision.models.LeNet(num_classes=10)


def _train(qmodel, x, y, steps, lr=1e-3, batch=64, seed=0):
    opt = paddle.optimizer.Adam(learning_rate=lr, parameters=qmodel.parameters())
    qmodel.train()
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(y), batch, replace=False)
        loss = paddle.nn.functional.cross_entropy(qmodel(paddle.to_tensor(x[idx])), paddle.to_tensor(y[idx]))
        loss.backward()
        opt.step()
        opt.clear_grad()
    qmodel.eval()
    return qmodel


def _out(model, x):
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


# quanters ----------------------------------------------------------------------------------
def test_registry_holds_the_quanters():
    assert {"abs_max", "moving_average_abs_max", "lsq", "lsq_plus", "pact"} <= set(QUANTERS.names())
    with pytest.raises(ConfigError, match="unknown quanter 'lsqq'.*did you mean 'lsq'"):
        QATConfig(activation_quanter="lsqq")


def test_lsq_step_gradient_is_scaled():
    x = paddle.to_tensor(np.array([0.11, -0.52, 3.0, -4.0, 0.27, 0.0], "float32"))
    q = LSQQuanter(bits=4)
    q.init_threshold(0.7)  # step 0.1, Q = 7
    out = q(x)
    out.sum().backward()
    s, big_q = 0.1, 7
    v = x.numpy() / s
    inside = np.abs(v) < big_q
    expected = np.where(inside, np.round(v) - v, np.sign(v) * big_q).sum() / np.sqrt(x.shape[0] * big_q)
    np.testing.assert_allclose(float(q.step.grad.numpy()[0]), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.numpy(), np.clip(np.round(v), -7, 7) * s, atol=1e-6)


def test_pact_alpha_gradient_counts_clipped_values():
    x = paddle.to_tensor(np.array([0.1, 2.0, 3.0, -5.0, 0.4], "float32"), stop_gradient=False)
    q = PACTQuanter(bits=8)
    q.init_threshold(1.0)
    out = q(x)
    out.sum().backward()
    # two values above alpha (+1 each), one below -alpha (-1)
    np.testing.assert_allclose(float(q.alpha.grad.numpy()[0]), 1.0, atol=1e-6)
    assert out.numpy().max() <= 1.0 + 1e-6 and out.numpy().min() >= -1.0 - 1e-6
    np.testing.assert_allclose(x.grad.numpy(), [1, 0, 0, 0, 1], atol=1e-6)  # STE inside, zero where clipped


@pytest.mark.parametrize("act", ["lsq", "lsq_plus", "pact"])
@pytest.mark.parametrize("arch", ["tiny-cnn", "lenet"])
def test_learned_quanter_parameters_receive_gradients(digits_model, act, arch):
    model, _, x, y, _, _ = digits_model
    if arch == "lenet":
        model, x = _lenet(), np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    qmodel = prepare_qat(model, QATConfig(weight_bits=4, weight_quanter="lsq", activation_quanter=act), [x[:32]])
    qmodel.train()
    out = qmodel(paddle.to_tensor(x[:32]))
    paddle.nn.functional.cross_entropy(out, paddle.to_tensor(y[:32])).backward()
    learned = {n: p for n, p in qmodel.named_parameters() if n.endswith(("step", "offset", "alpha"))}
    assert len(learned) >= 2 * len(qat_layers(qmodel))
    no_grad = [n for n, p in learned.items() if n.endswith(("step", "alpha")) and (p.grad is None or float(paddle.abs(p.grad).sum()) == 0)]
    # the network input (pixels in [0, 1], many exactly at the max) may leave the first PACT clip without gradient
    assert no_grad in ([], [next(iter(qat_layers(qmodel))) + ".act_quanter.alpha"]), no_grad


# BN folding and convert ------------------------------------------------------------------------
def test_prepare_folds_bn_and_leaves_model_alone(digits_model):
    model, _, x, _, xt, _ = digits_model
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    ref = _out(model, xt[:64])
    qmodel = prepare_qat(model, QATConfig(), [x[:64]])
    assert {n for n, layer in qat_layers(qmodel).items() if layer.bn is not None} == {"conv1", "conv2"}
    assert type(qmodel.bn1).__name__ == "Identity" and qmodel.slim_qat_state.folded_bn == [("conv1", "bn1"), ("conv2", "bn2")]
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in model.state_dict().items())
    assert type(model.conv1) is paddle.nn.Conv2D
    # W8A8 fake quant right after prepare stays close to float
    agree = (_out(qmodel, xt[:64]).argmax(1) == ref.argmax(1)).mean()
    assert agree > 0.95


def test_bn_statistics_freeze_after_n_steps(digits_model):
    model, _, x, y, _, _ = digits_model
    qmodel = prepare_qat(model, QATConfig(freeze_bn_after=3), [x[:64]])
    bn = qat_layers(qmodel)["conv1"].bn
    _train(qmodel, x, y, steps=2)
    assert not qat_layers(qmodel)["conv1"].bn_frozen
    moving = bn._mean.numpy().copy()
    _train(qmodel, x, y, steps=1, seed=1)
    assert not np.array_equal(moving, bn._mean.numpy())  # third step still updates
    assert qat_layers(qmodel)["conv1"].bn_frozen
    frozen = bn._mean.numpy().copy()
    _train(qmodel, x, y, steps=3, seed=2)
    np.testing.assert_array_equal(frozen, bn._mean.numpy())


@pytest.mark.parametrize(
    "act,weight",
    [("moving_average_abs_max", "abs_max"), ("lsq", "lsq"), ("pact", "abs_max")],
    ids=["ste", "lsq", "pact"],
)
@pytest.mark.parametrize("arch", ["tiny-cnn", "lenet"])
def test_convert_matches_the_trained_qat_model(digits_model, act, weight, arch):
    model, _, x, y, xt, _ = digits_model
    if arch == "lenet":
        rng = np.random.default_rng(0)
        model, x, xt = _lenet(), rng.random((256, 1, 28, 28), dtype=np.float32), rng.random((64, 1, 28, 28), dtype=np.float32)
    cfg = QATConfig(weight_bits=4, activation_quanter=act, weight_quanter=weight, freeze_bn_after=2)
    qmodel = _train(prepare_qat(model, cfg, [x[:64]]), x, y[: len(x)] if arch == "tiny-cnn" else y[:256], steps=4)
    converted = convert(qmodel)
    # a value on a rounding boundary may flip one code between the two graphs: tolerate a few moved logits
    assert_close_up_to_flips(_out(converted, xt[:64]), _out(qmodel, xt[:64]))
    layers = quanted_layers(converted)
    assert set(layers) == set(qat_layers(qmodel)) and not qat_layers(converted)
    for q in layers.values():
        assert q.w_codes.dtype == np.int8 and np.abs(q.w_codes).max() <= 7
    assert converted.slim_quant_state.config.weight_bits == 4


def test_converted_model_exports_int8_like_ptq(digits_model, tmp_path):
    import slim_quant

    model, _, x, y, _, _ = digits_model
    qmodel = _train(prepare_qat(model, QATConfig(freeze_bn_after=3), [x[:64], x[64:128]]), x, y, steps=5)
    result = slim_quant.export(convert(qmodel), tmp_path / "qat_int8", formats=("paddle",), latency_guard=False)
    assert len(result.quantized_ops["paddle"]) == 4
    assert result.agreement["paddle_top1_agreement"] >= 0.9
    fp32_bytes = sum(int(np.prod(p.shape)) * 4 for p in model.parameters())
    assert result.file_bytes["model_legacy.pdiparams"] < 0.4 * fp32_bytes  # int8 weights on disk


def test_lsq_plus_converts_to_the_covering_symmetric_range(digits_model):
    model, _, x, y, xt, yt = digits_model
    qmodel = _train(prepare_qat(model, QATConfig(activation_quanter="lsq_plus"), [x[:64]]), x, y, steps=10)
    with pytest.warns(UserWarning, match="LSQ\\+"):
        converted = convert(qmodel)
    for name, layer in qat_layers(qmodel).items():
        assert quanted_layers(converted)[name].act_threshold == pytest.approx(float(layer.act_quanter.threshold()[0]), rel=1e-6)
    assert demo.evaluate(converted, xt, yt) > demo.evaluate(qmodel, xt, yt) - 0.03


def test_qat_beats_ptq_at_4bit_weights(digits_model):
    from slim_quant import PTQConfig, quantize

    model, _, x, y, xt, yt = digits_model
    calib = [x[i : i + 64] for i in range(0, 256, 64)]
    ptq_acc = demo.evaluate(quantize(model, PTQConfig(weight_bits=4, calibrator="abs_max"), calib), xt, yt)
    paddle.seed(0)
    qmodel = prepare_qat(model, QATConfig(weight_bits=4, init_from_ptq=True, ptq_calibrator="abs_max", freeze_bn_after=60), calib)
    _train(qmodel, x, y, steps=80)
    qat_acc = demo.evaluate(convert(qmodel), xt, yt)
    assert qat_acc > ptq_acc, (qat_acc, ptq_acc)


def test_init_from_ptq_starts_from_calibrated_ranges(digits_model):
    model, _, x, _, _, _ = digits_model
    calib = [x[i : i + 64] for i in range(0, 128, 64)]
    cold = prepare_qat(model, QATConfig(activation_quanter="lsq"), calib)
    warm = prepare_qat(model, QATConfig(activation_quanter="lsq", init_from_ptq=True, ptq_calibrator="abs_max"), calib)
    t_warm = float(qat_layers(warm)["fc1"].act_quanter.threshold()[0])
    t_cold = float(qat_layers(cold)["fc1"].act_quanter.threshold()[0])
    acts = []
    h = model.fc1.register_forward_pre_hook(lambda layer, inp: acts.append(np.abs(inp[0].numpy()).max()))
    for b in calib:
        _out(model, b)
    h.remove()
    assert t_warm == pytest.approx(max(acts), rel=1e-4)  # abs-max calibration of fc1's input
    assert t_cold != pytest.approx(t_warm, rel=1e-2)  # LSQ's own init (2 mean|x| / sqrt(Q)) differs


# bad input ---------------------------------------------------------------------------------------
def test_bad_config_and_input(digits_model):
    model, _, x, _, _, _ = digits_model
    with pytest.raises(ConfigError, match="weight_bits"):
        QATConfig(weight_bits=9)
    with pytest.raises(ConfigError, match="weight_quanter"):
        QATConfig(weight_quanter="pact")
    with pytest.raises(ConfigError, match="skip_layers names 'fc3'"):
        prepare_qat(model, QATConfig(skip_layers=("fc3",)), [x[:8]])
    with pytest.raises(UnsupportedOpError):
        prepare_qat(paddle.nn.Sequential(paddle.nn.ReLU()), QATConfig(), [x[:8]])
    with pytest.raises(ConfigError, match="not prepared for QAT"):
        convert(model)
    q = prepare_qat(model, QATConfig(skip_layers=("fc2",)), [x[:8]])
    assert "fc2" not in qat_layers(q) and isinstance(q.fc1, QATLayer)
    with pytest.raises(ConfigError, match="already holds quantized layers"):
        prepare_qat(q, QATConfig(), [x[:8]])


# DataParallel ------------------------------------------------------------------------------------
_WORKER = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import paddle
    import paddle.distributed as dist
    from slim_core import demo, set_quiet
    from slim_quant.qat import QATConfig, prepare_qat

    set_quiet()
    dist.init_parallel_env()
    rank = dist.get_rank()
    paddle.seed(0)
    x, y = demo.load_digits("train")
    model = demo.build_tiny_cnn(width=8)
    # each rank calibrates on different data: ranges must still agree (all-reduced)
    qmodel = prepare_qat(model, QATConfig(weight_bits=4, weight_quanter="lsq", freeze_bn_after=3), [x[rank * 32 : rank * 32 + 32]])
    dp = paddle.DataParallel(qmodel)
    opt = paddle.optimizer.Adam(learning_rate=1e-3, parameters=dp.parameters())
    dp.train()
    for step in range(5):
        lo = (2 * step + rank) * 32
        loss = paddle.nn.functional.cross_entropy(dp(paddle.to_tensor(x[lo : lo + 32])), paddle.to_tensor(y[lo : lo + 32]))
        loss.backward()
        opt.step()
        opt.clear_grad()
    np.savez(os.path.join(sys.argv[1], f"rank{rank}.npz"), **{k: v.numpy() for k, v in qmodel.state_dict().items()})
    """
)


def test_data_parallel_ranks_agree(tmp_path):
    """Moving-average ranges (buffers, all-reduced) and LSQ weight steps (parameters) stay equal on 2 ranks."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = dict(os.environ, SLIM_QUIET="1", PYTHONWARNINGS="ignore")
    cmd = [
        sys.executable,
        "-m",
        "paddle.distributed.launch",
        "--nproc_per_node",
        "2",
        "--log_dir",
        str(tmp_path / "log"),
        str(script),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((tmp_path / "log").glob("*"))) if (tmp_path / "log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert set(r0.files) == set(r1.files)
    quanter_keys = [k for k in r0.files if "quanter" in k]
    assert quanter_keys
    for k in r0.files:
        np.testing.assert_allclose(r0[k], r1[k], rtol=1e-5, atol=1e-6, err_msg=k)
