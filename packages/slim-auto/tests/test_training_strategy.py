"""Fine-tuning loop pieces and the model description the strategy reads."""

import numpy as np
import paddle
import pytest

from slim_auto import TrainConfig
from slim_auto.strategy import describe_model
from slim_auto.training import finetune, layer_predict, make_optimizer
from slim_core import DataError


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw"])
def test_optimizers_and_schedules(optimizer, schedule):
    layer = paddle.nn.Linear(4, 2)
    cfg = TrainConfig(optimizer=optimizer, lr_schedule=schedule, learning_rate=0.1, warmup_steps=2, weight_decay=1e-4)
    opt, sched = make_optimizer(cfg, layer.parameters(), total_steps=20)
    assert (sched is None) == (schedule == "constant" and cfg.warmup_steps == 0)
    assert opt.get_lr() <= 0.1


def test_label_training_learns_and_stops_at_target():
    paddle.seed(0)
    layer = paddle.nn.Linear(4, 2)
    data = _data()
    evals = []

    def eval_fn(predict):
        x = np.concatenate([b[0] for b in data])
        y = np.concatenate([b[1] for b in data])
        acc = float((predict(x).argmax(-1) == y).mean())
        evals.append(acc)
        return acc

    out = finetune(
        layer, None, data, TrainConfig(steps=200, learning_rate=0.1, eval_interval=5), eval_fn=eval_fn, reached=lambda m: m >= 0.9
    )
    assert out.stopped == "target" and out.steps < 200 and evals[-1] >= 0.9
    assert out.losses and out.losses[0] > out.losses[-1] * 0.99


def test_training_without_labels_or_teacher_is_a_data_error():
    with pytest.raises(DataError, match="labels"):
        finetune(paddle.nn.Linear(4, 2), None, [np.zeros((4, 4), "float32")], TrainConfig(steps=1))


def test_deadline_stops_training():
    out = finetune(paddle.nn.Linear(4, 2), None, _data(), TrainConfig(steps=50), deadline=0.0)
    assert out.stopped == "time" and out.steps == 0


def test_layer_predict_restores_training_mode():
    layer = paddle.nn.Sequential(paddle.nn.Linear(4, 4), paddle.nn.Dropout(0.5))
    layer.train()
    y = layer_predict(layer)(np.ones((2, 4), "float32"))
    assert y.shape == (2, 4) and layer.training


def test_describe_model_tells_transformers_from_cnns():
    enc = paddle.nn.TransformerEncoder(paddle.nn.TransformerEncoderLayer(16, 2, 32), 1)
    cnn = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3), paddle.nn.ReLU(), paddle.nn.Flatten(), paddle.nn.Linear(8, 2))
    assert describe_model(enc)["transformer"] is True
    info = describe_model(cnn)
    assert info["transformer"] is False and info["params"] == sum(int(p.size) for p in cnn.parameters())
    assert 0.0 < info["linear_share"] < 1.0


def test_strategy_skips_quantization_retries_after_a_ptq_error():
    from types import SimpleNamespace

    from slim_auto import Candidate, TargetConfig
    from slim_auto.strategy import AutoStrategy

    engine = SimpleNamespace(
        model_layer=paddle.nn.Linear(4, 2), train_data=_data(), train_config=TrainConfig(), target=TargetConfig(max_metric_drop=0.01)
    )
    strategy = AutoStrategy(engine)
    base = Candidate(id=0, name="baseline", metric=0.9, latency_ms={"paddle": {"1": 1.0}})
    plans = [SimpleNamespace(name="ptq")]
    failed = Candidate(id=1, name="ptq", status="failed", error="ExportError: boom")
    name, recipe = strategy.next_plan(plans, [base, failed], base)
    assert name == "prune" and recipe.stages[0].settings["round_to"] == 8
    low = Candidate(id=1, name="ptq", metric=0.5, latency_ms={"paddle": {"1": 0.5}})
    name, _ = strategy.next_plan(plans, [base, low], base)
    assert name == "ptq-skip"  # a metric problem, not an error: skip the sensitive layers first
