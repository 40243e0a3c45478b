"""slim-auto end to end on small real models: recipe-driven, recipe-less, and bad inputs.

Each run uses the bundled digits data (8x8 images) and finishes in well under a minute.
"""

import json
import os
import stat

import numpy as np
import pytest

os.environ.setdefault("SLIM_QUIET", "1")

import paddle  # noqa: E402

import slim_auto  # noqa: E402
from slim_auto.demo import digits_batches  # noqa: E402
from slim_core import ConfigError, SlimError, demo  # noqa: E402
from slim_deploy.predictor import Predictor  # noqa: E402


class ResidualNet(paddle.nn.Layer):
    """A small residual CNN (conv-BN-ReLU stem, one residual block, linear head)."""

    def __init__(self, width=16):
        super().__init__()
        self.stem = paddle.nn.Sequential(paddle.nn.Conv2D(1, width, 3, padding=1), paddle.nn.BatchNorm2D(width), paddle.nn.ReLU())
        self.block = paddle.nn.Sequential(
            paddle.nn.Conv2D(width, width, 3, padding=1),
            paddle.nn.BatchNorm2D(width),
            paddle.nn.ReLU(),
            paddle.nn.Conv2D(width, width, 3, padding=1),
        )
        self.pool = paddle.nn.AdaptiveAvgPool2D(1)
        self.fc = paddle.nn.Linear(width, 10)

    def forward(self, x):
        x = self.stem(x)
        x = paddle.nn.functional.relu(x + self.block(x))
        return self.fc(paddle.flatten(self.pool(x), 1))


class DigitsTransformer(paddle.nn.Layer):
    """Each 8-pixel image row is a token: linear embedding, one encoder layer, mean pooling, linear head."""

    def __init__(self, d_model=32):
        super().__init__()
        self.embed = paddle.nn.Linear(8, d_model)
        self.encoder = paddle.nn.TransformerEncoder(paddle.nn.TransformerEncoderLayer(d_model, 4, 128, dropout=0.0), 1)
        self.head = paddle.nn.Linear(d_model, 10)

    def forward(self, x):
        tokens = self.embed(paddle.reshape(x, [-1, 8, 8]))
        return self.head(self.encoder(tokens).mean(axis=1))


def _train(model, epochs=4):
    x, y = demo.load_digits("train")
    opt = paddle.optimizer.Adam(learning_rate=3e-3, parameters=model.parameters())
    model.train()
    for _ in range(epochs):
        for xb, yb in digits_batches():
            loss = paddle.nn.functional.cross_entropy(model(paddle.to_tensor(xb)), paddle.to_tensor(yb))
            loss.backward()
            opt.step()
            opt.clear_grad()
    model.eval()
    return model


@pytest.fixture(scope="module")
def digits_cnn():
    model, acc = demo.train_demo_model(epochs=4)
    assert acc > 0.9
    return model


@pytest.fixture(scope="module")
def residual_net():
    paddle.seed(1)
    return _train(ResidualNet())


@pytest.fixture(scope="module")
def transformer():
    paddle.seed(2)
    return _train(DigitsTransformer(), epochs=6)


@pytest.fixture(scope="module")
def test_split():
    return demo.load_digits("test")


def _state_dict_bytes(model):
    return {k: v.numpy().tobytes() for k, v in model.state_dict().items()}


RECIPE = {
    "stages": [{"prune": {"flops_ratio": 0.3}}, {"distill": {}}, {"sparsity": {"ratio": 0.3}}],
    "train": {"epochs": 2, "learning_rate": 0.002},
    "target": {"max_metric_drop": 0.05},
}


@pytest.mark.parametrize("arch", ["digits_cnn", "residual_net"])
def test_recipe_driven_run_writes_everything(arch, request, test_split, tmp_path):
    model = request.getfixturevalue(arch)
    before = _state_dict_bytes(model)
    xt, yt = test_split
    out = tmp_path / "out"
    result = slim_auto.AutoCompression(
        model, digits_batches(), slim_auto.accuracy_eval(xt, yt), config=RECIPE, example_inputs=xt[:1], out_dir=out
    ).compress()
    assert [c.name for c in result.candidates] == ["baseline", "prune", "prune > distill", "prune > distill > sparsity"]
    assert all(c.status == "ok" for c in result.candidates), [c.error for c in result.candidates]
    pruned = result.candidates[1]
    assert pruned.size_bytes < result.baseline.size_bytes  # channels physically removed
    for name in ("report.md", "report.html", "metrics.json", "model/slim.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best"]["id"] == result.best.id and len(metrics["candidates"]) == 4
    # the delivered model is the best candidate, and it reproduces the reported metric
    pred = Predictor(out / "model", threads=1)
    acc = float((np.asarray(pred(xt)).argmax(-1) == yt).mean())
    pred.close()
    assert acc == pytest.approx(result.best.metric, abs=1e-9)
    # distillation recovered accuracy lost by pruning
    assert result.candidates[2].metric >= result.candidates[1].metric - 0.01
    assert _state_dict_bytes(model) == before  # the user's model is untouched
    md = (out / "report.md").read_text()
    assert "| metric |" in md and "latency paddle batch 1" in md


def test_recipe_less_run_reaches_a_result(digits_cnn, test_split, tmp_path):
    xt, yt = test_split
    out = tmp_path / "auto"
    result = slim_auto.AutoCompression(
        digits_cnn,
        digits_batches(),
        slim_auto.accuracy_eval(xt, yt),
        config={"train": {"epochs": 2}},
        target={"max_metric_drop": 0.02},
        example_inputs=xt[:1],
        out_dir=out,
        max_time=120,
    ).compress()
    names = [c.name for c in result.candidates]
    assert names[0] == "baseline" and names[1] == "ptq"  # PTQ is tried first
    ptq = result.candidates[1]
    assert ptq.trials and all("calibrator" in t["settings"] for t in ptq.trials)
    assert result.stopped in ("target", "done", "time")
    assert (out / "model" / "slim.json").is_file() and (out / "report.html").is_file()
    if result.target_met:
        assert result.best.id != 0 and result.metric_drop <= 0.02 + 1e-9
    else:
        assert "NOT met" in (out / "report.md").read_text()


def test_unreachable_target_saves_best_and_says_so(digits_cnn, test_split, tmp_path):
    xt, yt = test_split
    out = tmp_path / "hard"
    result = slim_auto.AutoCompression(
        digits_cnn,
        digits_batches(),
        slim_auto.accuracy_eval(xt, yt),
        config={"stages": [{"prune": {"ratio": 0.2}}]},
        target={"max_metric_drop": 0.0, "min_speedup": 100.0},
        example_inputs=xt[:1],
        out_dir=out,
    ).compress()
    assert not result.target_met and result.unmet_reasons
    assert (out / "model" / "slim.json").is_file()
    md = (out / "report.md").read_text()
    assert "Target NOT met" in md and "best result found is saved" in md
    assert json.loads((out / "metrics.json").read_text())["target_met"] is False


def test_eval_fn_that_raises_marks_stage_failed_and_keeps_earlier_results(digits_cnn, test_split, tmp_path):
    xt, yt = test_split
    inner = slim_auto.accuracy_eval(xt, yt)
    calls = {"n": 0}

    def flaky_eval(predict):
        calls["n"] += 1
        if calls["n"] >= 3:  # baseline and first stage work, the second stage's evaluation fails
            raise RuntimeError("evaluation server went away")
        return inner(predict)

    out = tmp_path / "flaky"
    result = slim_auto.AutoCompression(
        digits_cnn,
        digits_batches(),
        flaky_eval,
        config={"stages": [{"prune": {"ratio": 0.2}}, {"distill": {}}], "train": {"steps": 5}},
        target={"max_metric_drop": 0.5},
        example_inputs=xt[:1],
        out_dir=out,
    ).compress()
    statuses = [(c.name, c.status) for c in result.candidates]
    assert statuses == [("baseline", "ok"), ("prune", "ok"), ("prune > distill", "failed")]
    assert "evaluation server went away" in result.candidates[2].error
    assert result.best.id in (0, 1)
    assert (out / "model" / "slim.json").is_file()
    assert "evaluation server went away" in (out / "report.md").read_text()


def test_unwritable_output_dir_fails_before_any_work(digits_cnn, test_split, tmp_path):
    xt, yt = test_split
    calls = []

    def make(out):
        return slim_auto.AutoCompression(
            digits_cnn,
            digits_batches(),
            lambda p: calls.append(1) or 1.0,
            config={"stages": [{"ptq": {}}]},
            example_inputs=xt[:1],
            out_dir=out,
        )

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(SlimError, match="cannot create output directory"):
        make(blocker / "out")
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            with pytest.raises(SlimError, match="not writable|cannot create"):
                make(locked / "out")
        finally:
            locked.chmod(stat.S_IRWXU)
    assert calls == []


def test_full_disk_fails_before_any_work(digits_cnn, test_split, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    xt, yt = test_split
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(SlimError, match="not enough free disk space"):
        slim_auto.AutoCompression(
            digits_cnn, digits_batches(), slim_auto.accuracy_eval(xt, yt), example_inputs=xt[:1], out_dir=tmp_path / "o"
        )


@pytest.mark.parametrize(
    "config, match",
    [
        (
            "stages:\n  - prune: {flops_ratio: 0.3}\n  - ptq: {calibrater: kl}\n",
            r"line 3, stage 1 \(ptq\).*'calibrater'.*did you mean 'calibrator'",
        ),
        ("stages:\n  - prune: {ratio: 1.5}\n", r"line 2, stage 0 \(prune\).*ratio"),
        ("stages:\n  - qta: {}\n", r"line 2.*did you mean 'qat'"),
        ({"stages": [{"nas": {"phases": []}}]}, r"stage 0 \(nas\).*OFAConfig.phases is empty"),
    ],
    ids=["unknown-setting", "bad-setting-value", "unknown-stage", "bad-nas-settings"],
)
def test_bad_recipes_fail_before_work(config, match, digits_cnn, test_split, tmp_path):
    xt, yt = test_split
    with pytest.raises(ConfigError, match=match):
        slim_auto.AutoCompression(
            digits_cnn, digits_batches(), slim_auto.accuracy_eval(xt, yt), config=config, example_inputs=xt[:1], out_dir=tmp_path / "o"
        )
    assert not (tmp_path / "o").exists()


def test_other_bad_inputs(digits_cnn, test_split, tmp_path):
    xt, yt = test_split
    with pytest.raises(ConfigError, match="eval_fn is required"):
        slim_auto.AutoCompression(digits_cnn, digits_batches(), None, out_dir=tmp_path / "a")
    with pytest.raises(ConfigError, match="needs train_data"):
        slim_auto.AutoCompression(
            digits_cnn,
            None,
            slim_auto.accuracy_eval(xt, yt),
            config={"stages": [{"distill": {}}]},
            example_inputs=xt[:1],
            out_dir=tmp_path / "b",
        )
    with pytest.raises(SlimError, match="model must be"):
        slim_auto.AutoCompression(object(), digits_batches(), slim_auto.accuracy_eval(xt, yt), out_dir=tmp_path / "c")
    with pytest.raises(SlimError, match="not found|no inference model"):
        slim_auto.AutoCompression(str(tmp_path / "missing"), digits_batches(), slim_auto.accuracy_eval(xt, yt), out_dir=tmp_path / "d")


@pytest.mark.parametrize("arch", ["digits_cnn", "residual_net"])
def test_qat_stage_with_distillation(arch, request, test_split, tmp_path):
    model = request.getfixturevalue(arch)
    xt, yt = test_split
    result = slim_auto.AutoCompression(
        model,
        digits_batches(),
        slim_auto.accuracy_eval(xt, yt),
        config={"stages": [{"qat": {"freeze_bn_after": 10}}], "train": {"steps": 30, "learning_rate": 5e-4}},
        target={"max_metric_drop": 0.05},
        example_inputs=xt[:1],
        out_dir=tmp_path / "qat",
    ).compress()
    qat = result.candidates[1]
    assert qat.name == "qat" and qat.status == "ok", qat.error
    assert "Trained 30 steps" in " ".join(qat.notes)
    assert qat.metric >= result.baseline.metric - 0.05
    manifest = json.loads((tmp_path / "qat" / qat.model_dir / "slim.json").read_text())
    assert "quantization" in json.dumps(manifest)


@pytest.mark.parametrize("arch", ["digits_cnn", "transformer"])
def test_weight_only_stage_shrinks_linear_weights(arch, request, test_split, tmp_path):
    model = request.getfixturevalue(arch)
    xt, yt = test_split
    result = slim_auto.AutoCompression(
        model,
        digits_batches(),
        slim_auto.accuracy_eval(xt, yt),
        config={"stages": [{"weight_only": {"bits": 8}}]},
        target={"max_metric_drop": 0.05},
        example_inputs=xt[:1],
        out_dir=tmp_path / "wo",
    ).compress()
    wo = result.candidates[1]
    assert wo.name == "weight_only" and wo.status == "ok", wo.error
    assert wo.size_bytes < result.baseline.size_bytes
    assert wo.metric >= result.baseline.metric - 0.05


@pytest.mark.parametrize("kind", ["resnet", "mobilenetv2"])
def test_nas_stage_trains_a_supernet_and_keeps_a_smaller_subnet(kind, test_split, tmp_path):
    import slim_nas

    paddle.seed(0)
    if kind == "resnet":
        sup = slim_nas.OFAResNet(
            num_classes=10, in_channels=1, input_size=8, stages=((8, 1, 1), (16, 1, 2)), stem_channels=8, head_channels=32
        )
    else:
        sup = slim_nas.OFAMobileNetV2(
            num_classes=10, in_channels=1, input_size=8, stages=((8, 1, 1), (16, 1, 2)), stem_channels=8, head_channels=32
        )
    xt, yt = test_split
    out = tmp_path / "nas"
    result = slim_auto.AutoCompression(
        sup,
        digits_batches(),
        slim_auto.accuracy_eval(xt, yt),
        config={"stages": [{"nas": {"steps_per_phase": 10, "learning_rate": 0.005}, "max_trials": 4}]},
        target={"max_metric_drop": 0.05},
        example_inputs=xt[:1],
        out_dir=out,
    ).compress()
    nas = result.candidates[1]
    assert nas.name == "nas" and nas.status == "ok", nas.error
    assert nas.metric > result.baseline.metric  # the supernet was trained from scratch
    assert nas.flops <= result.baseline.flops
    record = json.loads((out / "checkpoints" / "state.json").read_text())["plans"][0]["records"][0]
    assert set(record["subnet"]) == set(sup.space().largest()) and len(record["trials"]) >= 2


def test_nas_stage_needs_a_supernet(digits_cnn, test_split, tmp_path):
    xt, yt = test_split
    result = slim_auto.AutoCompression(
        digits_cnn,
        digits_batches(),
        slim_auto.accuracy_eval(xt, yt),
        config={"stages": [{"nas": {"steps_per_phase": 2}}]},
        example_inputs=xt[:1],
        out_dir=tmp_path / "nas-cnn",
    ).compress()
    assert result.candidates[1].status == "failed" and "needs a slim_nas.Supernet" in result.candidates[1].error
