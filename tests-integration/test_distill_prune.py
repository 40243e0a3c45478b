"""Distillation as the fine-tuning loss after structured pruning (slim-prune + slim-distill, plain composition)."""

import copy

import numpy as np
import paddle
import pytest

import slim_prune
from slim_core.demo import evaluate, load_digits, train_demo_model
from slim_distill import Distiller, fit

X, Y = load_digits("train")
XT, YT = load_digits("test")


@pytest.fixture(scope="module")
def teacher():
    model, acc = train_demo_model(epochs=6, seed=0)
    assert acc > 0.9
    return model, acc


def _batches(seed, n=8):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(Y))
    return [(X[order[i : i + 64]], Y[order[i : i + 64]]) for i in range(0, 64 * n, 64)]


def test_pruned_digits_cnn_recovers_with_distillation_through_an_adaptor(teacher):
    model, teacher_acc = teacher
    pruned = copy.deepcopy(model)
    result = slim_prune.prune_(pruned, slim_prune.PruneConfig(flops_ratio=0.5), paddle.to_tensor(X[:2]))
    assert result.flops_ratio == pytest.approx(0.5, abs=0.1)
    assert pruned.bn2.weight.shape[0] < model.bn2.weight.shape[0]  # channels physically removed
    acc_pruned = evaluate(pruned, XT, YT)

    cfg = {
        "logits": {"loss": "kl", "temperature": 4.0, "weight": 1.0},
        "pairs": [{"student": "bn2", "teacher": "bn2", "loss": "mse", "weight": 0.5}],
    }
    d = Distiller(pruned, model, cfg, example_inputs=X[:4])
    assert "p0_0" in d.adaptors  # the pruned width differs from the teacher's: a 1x1 conv maps it back
    teacher_before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    opt = paddle.optimizer.Adam(learning_rate=2e-3, parameters=d.parameters())
    res = fit(d, _batches(1), opt, epochs=3, eval_fn=lambda m: evaluate(m, XT, YT))
    acc_tuned = res.history[-1]["metric"]
    assert acc_tuned >= max(acc_pruned, teacher_acc - 0.05)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), teacher_before[k], err_msg=f"the teacher changed: {k}")


def test_pruned_resnet_feature_distillation_lowers_the_loss():
    paddle.seed(0)
    teacher_net = paddle.vision.models.resnet18(num_classes=10)
    student = copy.deepcopy(teacher_net)
    x = paddle.rand([8, 3, 32, 32])
    slim_prune.prune_(student, slim_prune.PruneConfig(flops_ratio=0.5), x[:1])
    d = Distiller(student, teacher_net, {"pairs": [{"student": "layer?", "teacher": "layer?", "loss": "mse"}]}, example_inputs=x)
    assert len(d.pairs) == 4 and len(d.adaptors) >= 1
    opt = paddle.optimizer.Adam(learning_rate=1e-3, parameters=d.parameters())
    d.train()
    losses = []
    for _ in range(8):
        d(x)
        loss = d.loss()
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0]
