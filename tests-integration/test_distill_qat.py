"""Distillation during quantization-aware training (slim-quant QAT + slim-distill, plain composition)."""

import numpy as np
import paddle
import pytest

from slim_core.demo import evaluate, load_digits, train_demo_model
from slim_distill import Distiller, fit
from slim_quant.qat import QATConfig, convert, prepare_qat

X, Y = load_digits("train")
XT, YT = load_digits("test")


@pytest.fixture(scope="module")
def teacher():
    model, acc = train_demo_model(epochs=6, seed=0)
    assert acc > 0.9
    return model, acc


def _batches(seed, n=8):
    order = np.random.default_rng(seed).permutation(len(Y))
    return [(X[order[i : i + 64]], Y[order[i : i + 64]]) for i in range(0, 64 * n, 64)]


def test_qat_student_distilled_from_its_float_teacher(teacher):
    model, teacher_acc = teacher
    qmodel = prepare_qat(model, QATConfig(weight_bits=4), [X[:64]])
    # the float teacher keeps its weights; the QAT copy is the student (its wrappers answer to the same paths)
    cfg = {
        "logits": {"loss": "kl", "temperature": 4.0, "weight": 1.0},
        "pairs": [{"student": "fc1", "teacher": "fc1", "loss": "mse", "weight": 0.5}],
    }
    d = Distiller(qmodel, model, cfg, example_inputs=X[:4])
    assert len(d.adaptors) == 0  # same widths: no adaptor
    teacher_before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    opt = paddle.optimizer.Adam(learning_rate=1e-3, parameters=d.parameters())
    res = fit(d, _batches(2), opt, epochs=3, eval_fn=lambda m: evaluate(m, XT, YT))
    qat_acc = res.history[-1]["metric"]
    assert res.history[-1]["distill_loss"] < res.history[0]["distill_loss"]
    assert qat_acc >= teacher_acc - 0.05
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), teacher_before[k], err_msg=f"the teacher changed: {k}")
    d.remove_hooks()
    int_model = convert(qmodel)
    assert evaluate(int_model, XT, YT) == pytest.approx(qat_acc, abs=0.03)
