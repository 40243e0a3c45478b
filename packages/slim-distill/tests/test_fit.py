"""fit(): training, history, checkpoint/resume equality, errors."""

import numpy as np
import paddle
import pytest
from distill_models import DropoutStudent

from slim_core.demo import build_tiny_cnn, evaluate, load_digits
from slim_core.errors import ConfigError, DataError, SlimError
from slim_distill import Distiller, MutualLearner, fit, load_checkpoint

X, Y = load_digits("train")
XT, YT = load_digits("test")


class Digits(paddle.io.Dataset):
    def __init__(self, n):
        self.x, self.y = X[:n], Y[:n]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _setup(seed, init_seed=None):
    """Teacher fixed by ``seed``; student and adaptor initialised from ``init_seed``."""
    paddle.seed(seed)
    teacher = build_tiny_cnn(width=16)
    paddle.seed(seed if init_seed is None else init_seed)
    student = DropoutStudent(width=8)
    cfg = {"logits": {"loss": "kl", "temperature": 4.0, "weight": 0.5}, "pairs": [{"student": "bn2", "teacher": "bn2", "loss": "mse"}]}
    d = Distiller(student, teacher, cfg, example_inputs=paddle.to_tensor(X[:4]))
    sched = paddle.optimizer.lr.StepDecay(learning_rate=0.01, step_size=1, gamma=0.5)
    opt = paddle.optimizer.Adam(learning_rate=sched, parameters=d.parameters())
    return d, opt


def _loader(seed):
    np.random.seed(seed)
    return paddle.io.DataLoader(Digits(96), batch_size=16, shuffle=True)  # 6 steps per epoch, order drawn from numpy


def _weights(d):
    return {k: v.numpy().copy() for k, v in d.state_dict().items()}


def test_fit_trains_and_records_history():
    d, opt = _setup(0)
    batches = [(X[i : i + 32], Y[i : i + 32]) for i in range(0, 512, 32)]
    acc0 = evaluate(d.student, XT, YT)
    res = fit(d, batches, opt, epochs=3, eval_fn=lambda m: evaluate(m, XT, YT))
    assert [h["epoch"] for h in res.history] == [1, 2, 3] and res.steps == 48 and not res.stopped_early
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.history[-1]["metric"] > max(acc0, 0.5)
    for h in res.history:
        assert h["loss"] == pytest.approx(h["task_loss"] + h["distill_loss"], rel=1e-4)


@pytest.mark.parametrize("stop_at", [8, 6], ids=["mid-epoch", "epoch-boundary"])
def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path, stop_at):
    d, opt = _setup(0)
    full = fit(d, _loader(7), opt, epochs=2, eval_fn=lambda m: evaluate(m, XT, YT))
    reference = _weights(d)

    ckpt = tmp_path / "ckpt"
    d1, opt1 = _setup(0)
    part = fit(d1, _loader(7), opt1, epochs=2, checkpoint_dir=ckpt, max_steps=stop_at, eval_fn=lambda m: evaluate(m, XT, YT))
    assert part.stopped_early and part.steps == stop_at
    # a fresh process would rebuild everything: other initial weights, other random state
    d2, opt2 = _setup(0, init_seed=123)
    np.random.seed(999)
    paddle.seed(999)
    rest = fit(d2, _loader(7), opt2, epochs=2, checkpoint_dir=ckpt, eval_fn=lambda m: evaluate(m, XT, YT))
    assert rest.resumed_from == stop_at and rest.steps == full.steps == 12
    got = _weights(d2)
    assert set(got) == set(reference)
    for k in reference:
        np.testing.assert_allclose(got[k], reference[k], rtol=1e-6, atol=1e-7, err_msg=k)
    assert [h["loss"] for h in rest.history] == pytest.approx([h["loss"] for h in full.history], rel=1e-6)
    assert opt2.get_lr() == pytest.approx(opt.get_lr())
    assert [p.name for p in ckpt.iterdir()] == ["last"]  # no temporary directories left behind


def test_checkpoint_holds_everything_needed(tmp_path):
    d, opt = _setup(1)
    fit(d, [(X[:16], Y[:16])] * 3, opt, epochs=1, checkpoint_dir=tmp_path, save_every_steps=2)
    saved = load_checkpoint(tmp_path)
    assert saved["state"]["epoch"] == 1 and saved["state"]["global_step"] == 3
    assert "adaptors.p0_0.weight" in saved["model"] and "LR_Scheduler" in saved["optimizer"]
    assert "adaptors.p0_0.weight" in saved["optimizer"]["accumulators"]["moment1"]
    with pytest.raises(SlimError, match="incomplete or absent"):
        load_checkpoint(tmp_path / "nothing")


def test_fit_mutual_learning_hands_every_student_to_eval_fn():
    paddle.seed(2)
    learner = MutualLearner([build_tiny_cnn(width=4), build_tiny_cnn(width=8)], {"temperature": 2.0})
    opt = paddle.optimizer.Adam(learning_rate=0.005, parameters=learner.parameters())
    batches = [(X[i : i + 32], Y[i : i + 32]) for i in range(0, 256, 32)]
    res = fit(learner, batches, opt, epochs=2, eval_fn=lambda ms: [evaluate(m, XT, YT) for m in ms])
    accs = res.history[-1]["metric"]
    assert len(accs) == 2 and min(accs) > 0.3
    assert res.history[0]["task_loss"] > res.history[-1]["task_loss"]


def test_fit_rejects_bad_arguments():
    d, opt = _setup(3)
    data = [(X[:8], Y[:8])]
    with pytest.raises(ConfigError, match="epochs"):
        fit(d, data, opt, epochs=0)
    with pytest.raises(ConfigError, match="task_loss"):
        fit(d, data, opt, task_loss="hinge")
    with pytest.raises(ConfigError, match="Distiller or MutualLearner"):
        fit(d.student, data, opt)
    with pytest.raises(ConfigError, match="optimizer"):
        fit(d, data, "adam")
    with pytest.raises(DataError, match="empty"):
        fit(d, [], opt)
    with pytest.raises(DataError, match="NaN"):
        fit(d, [(np.full((4, 1, 8, 8), np.nan, "float32"), Y[:4])], opt)


class TwoInputs(paddle.nn.Layer):
    def __init__(self, width):
        super().__init__()
        self.a = paddle.nn.Linear(4, width)
        self.b = paddle.nn.Linear(3, width)
        self.head = paddle.nn.Linear(width, 5)

    def forward(self, u, v):
        return self.head(paddle.nn.functional.relu(self.a(u) + self.b(v)))


def test_fit_with_two_named_inputs_and_dkd_on_labels():
    paddle.seed(4)
    rng = np.random.default_rng(4)
    data = [
        {"u": rng.normal(size=(16, 4)).astype("float32"), "v": rng.normal(size=(16, 3)).astype("float32"), "label": rng.integers(0, 5, 16)}
        for _ in range(4)
    ]
    cfg = {"logits": {"loss": "dkd", "params": {"beta": 2.0}}, "pairs": [{"student": "a", "teacher": "a", "loss": "cosine"}]}
    d = Distiller(TwoInputs(8), TwoInputs(16), cfg, example_inputs=(data[0]["u"], data[0]["v"]))
    opt = paddle.optimizer.Adam(learning_rate=0.01, parameters=d.parameters())
    res = fit(d, data, opt, epochs=4, input_names=["u", "v"])
    assert res.steps == 16 and res.history[-1]["task_loss"] > 0
    assert res.history[-1]["distill_loss"] < res.history[0]["distill_loss"]
