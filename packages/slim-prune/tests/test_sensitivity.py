import json

import numpy as np
import paddle
import paddle.vision.models as M
import pytest
from conftest import assert_same_state, state_arrays

from slim_core import ConfigError, demo
from slim_prune import PruneConfig, Sensitivity, prune_, sensitivity


@pytest.fixture(scope="module")
def digits():
    model, acc = demo.train_demo_model(epochs=3, width=8)
    xt, yt = demo.load_digits("test")
    return model, acc, xt, yt


def test_sensitivity_records_losses_resumes_and_picks_ratios(digits, tmp_path):
    model, acc, xt, yt = digits
    before = state_arrays(model)
    calls = []

    def eval_fn(m):
        calls.append(1)
        return demo.evaluate(m, xt, yt)

    path = tmp_path / "sens.json"
    x = paddle.to_tensor(xt[:1])
    sens = sensitivity(model, eval_fn, x, ratios=(0.25, 0.5, 0.75), path=path)
    assert_same_state(before, model)  # every trial is undone
    assert sens.baseline == pytest.approx(acc)
    assert set(sens.losses) == {"conv1", "conv2", "fc1"}
    assert all(len(v) == 3 for v in sens.losses.values())
    assert sens.losses["conv2"][0.75] >= sens.losses["conv2"][0.25] - 0.02  # more pruning hurts more
    data = json.loads(path.read_text())
    assert data["baseline"] == pytest.approx(acc)

    # resume: drop two entries as if the run had stopped; only those are recomputed
    del data["losses"]["fc1"]["0.75"], data["losses"]["conv1"]["0.5"]
    path.write_text(json.dumps(data))
    calls.clear()
    resumed = sensitivity(model, eval_fn, x, ratios=(0.25, 0.5, 0.75), path=path)
    assert len(calls) == 2
    assert resumed.losses == sens.losses  # deterministic eval on a restored model: same numbers
    assert Sensitivity.load(path).complete()

    ratios = resumed.ratios_for(flops_ratio=0.3)
    assert ratios and all(0 < r <= 0.75 for r in ratios.values())
    pruned, _ = demo.train_demo_model(epochs=0, width=8)
    pruned.set_state_dict(model.state_dict())
    res = prune_(pruned, PruneConfig(ratios=ratios), x)
    assert res.flops_ratio >= 0.25
    loose = resumed.ratios_for(max_loss=1.0)
    assert max(loose.values()) == pytest.approx(0.75)


def test_sensitivity_bad_input(digits, tmp_path):
    model, _, xt, yt = digits
    x = paddle.to_tensor(xt[:1])
    with pytest.raises(ConfigError, match=r"in \(0, 1\)"):
        sensitivity(model, lambda m: 1.0, x, ratios=(0.5, 1.0))
    with pytest.raises(ConfigError, match="unknown criterion"):
        sensitivity(model, lambda m: 1.0, x, criterion="l7")
    other = M.mobilenet_v1(scale=0.25, num_classes=10)
    path = tmp_path / "s.json"
    sensitivity(model, lambda m: 1.0, x, ratios=(0.5,), path=path)
    with pytest.raises(ConfigError, match="different model"):
        sensitivity(other, lambda m: 1.0, paddle.randn([1, 3, 32, 32]), ratios=(0.5,), path=path)
    sens = Sensitivity.load(path)
    with pytest.raises(ConfigError, match="exactly one"):
        sens.ratios_for()
    with pytest.raises(ConfigError, match="not reachable"):
        sens.ratios_for(flops_ratio=0.95)


def test_sensitivity_plot(digits, tmp_path):
    pytest.importorskip("matplotlib")
    model, _, xt, yt = digits
    sens = sensitivity(model, lambda m: demo.evaluate(m, xt[:50], yt[:50]), paddle.to_tensor(xt[:1]), ratios=(0.5,))
    out = sens.plot(tmp_path / "sens.png")
    assert out.stat().st_size > 1000
    assert np.isfinite(sens.baseline)


def test_sensitivity_on_transformer_restores_heads():
    enc = paddle.nn.TransformerEncoder(paddle.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0), 1)
    enc.eval()
    x = paddle.randn([2, 5, 32])
    ref = enc(x).numpy()
    sens = sensitivity(enc, lambda m: -float(((m(x).numpy() - ref) ** 2).mean()), x, ratios=(0.5,))
    assert len(sens.losses) == 2  # the heads group and the FFN group
    assert all(v[0.5] > 0 for v in sens.losses.values())
    assert enc.layers[0].self_attn.num_heads == 4
    np.testing.assert_allclose(enc(x).numpy(), ref, rtol=1e-6, atol=1e-6)
