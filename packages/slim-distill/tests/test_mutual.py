"""Deep mutual learning between two or three students."""

import numpy as np
import paddle
import pytest
from distill_models import TokenEncoder, minimise_distill_loss
from test_losses import np_kl

from slim_core.demo import build_tiny_cnn
from slim_core.errors import ConfigError
from slim_distill import DMLConfig, MutualLearner, ShapeMismatchError


@pytest.mark.parametrize("n", [2, 3], ids=["two-students", "three-students"])
def test_mutual_loss_matches_hand_computed_value(n):
    paddle.seed(0)
    students = [build_tiny_cnn(width=4 * (i + 1)) for i in range(n)]
    learner = MutualLearner(students, {"temperature": 2.0, "weight": 0.5})
    outs = learner(paddle.rand([6, 1, 8, 8]))
    assert len(outs) == n
    logits = [o.numpy().astype("float64") for o in outs]
    expected = 0.5 * sum(np.mean([np_kl(logits[i], logits[j], 2.0) for j in range(n) if j != i]) for i in range(n))
    assert float(learner.loss()) == pytest.approx(expected, rel=1e-4)


def test_each_student_gets_only_its_own_gradient():
    paddle.seed(1)
    a, b = build_tiny_cnn(width=4), build_tiny_cnn(width=8)
    learner = MutualLearner([a, b])
    x = paddle.rand([4, 1, 8, 8])
    learner(x)
    learner.loss().backward()
    grad_a = a.fc2.weight.grad.numpy().copy()
    learner.clear_gradients()
    # student a's term alone, with b's prediction as a fixed target, gives the same gradient for a
    learner(x)
    learner.losses()["student0"].backward()
    np.testing.assert_allclose(a.fc2.weight.grad.numpy(), grad_a, rtol=1e-5, atol=1e-7)
    assert b.fc2.weight.grad is None or not np.abs(b.fc2.weight.grad.numpy()).any()


def test_mutual_learning_brings_transformer_students_together():
    paddle.seed(2)
    learner = MutualLearner([TokenEncoder(16), TokenEncoder(32)], DMLConfig(temperature=1.0))
    first, last = minimise_distill_loss(learner, paddle.rand([16, 6, 8]), steps=25)
    assert last < 0.2 * first


def test_bad_students_are_rejected():
    with pytest.raises(ConfigError, match="at least two"):
        MutualLearner([build_tiny_cnn()])
    net = build_tiny_cnn()
    with pytest.raises(ConfigError, match="appears twice"):
        MutualLearner([net, net])
    learner = MutualLearner([build_tiny_cnn(num_classes=10), build_tiny_cnn(num_classes=5)])
    with pytest.raises(ShapeMismatchError, match="one shape"):
        learner(paddle.rand([2, 1, 8, 8]))
