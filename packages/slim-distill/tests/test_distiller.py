"""The Distiller on real architectures: adaptors, frozen teacher, shape errors, training effect."""

import numpy as np
import paddle
import pytest
from distill_models import TokenEncoder, minimise_distill_loss

from slim_core.demo import build_tiny_cnn
from slim_distill import Distiller, DistillError, LogitsConfig, ShapeMismatchError, make_adaptor
from slim_distill.config import DistillConfig

ISSUE_FORM = {
    "logits": {"loss": "kl", "temperature": 4.0, "weight": 1.0},
    "pairs": [{"student": "features.6", "teacher": "layer2", "loss": "mse", "weight": 1.0}],
}


def _mobilenet_resnet():
    paddle.seed(0)
    return paddle.vision.models.mobilenet_v2(scale=1.0, num_classes=10), paddle.vision.models.resnet18(num_classes=10)


def _bn_means(layer):
    return np.concatenate([m._mean.numpy().ravel() for m in layer.sublayers() if isinstance(m, paddle.nn.BatchNorm2D)])


def _snapshot(layer):
    return {k: v.numpy().copy() for k, v in layer.state_dict().items()}


def test_issue_config_on_mobilenet_student_resnet_teacher():
    student, teacher = _mobilenet_resnet()
    x = paddle.rand([4, 3, 32, 32])
    teacher.train()
    before_teacher = _snapshot(teacher)
    before_student_bn = _bn_means(student)
    d = Distiller(student, teacher, ISSUE_FORM, example_inputs=x)
    # the probe ran the student in eval mode: its BatchNorm statistics did not move
    np.testing.assert_array_equal(_bn_means(student), before_student_bn)
    assert not teacher.training
    adaptor = d.adaptors["p0_0"]
    assert isinstance(adaptor, paddle.nn.Conv2D) and adaptor.weight.shape == [128, 32, 1, 1]
    names = [n for n, _ in d.named_parameters()]
    assert "adaptors.p0_0.weight" in names and not any(n.startswith("teacher") for n in names)
    assert not any(k.startswith("teacher") or k.startswith("_teacher") for k in d.state_dict())

    opt = paddle.optimizer.SGD(learning_rate=0.1, parameters=d.parameters())
    d.train()
    assert not teacher.training and student.training
    teacher.train()  # someone flips it back: the next forward freezes it again
    out = d(x)
    assert not teacher.training
    assert out.shape == [4, 10]
    terms = d.losses()
    assert set(terms) == {"logits:kl", "pair0:features.6->layer2:mse"}
    loss = d.loss()
    assert float(loss) == pytest.approx(float(terms["logits:kl"]) + float(terms["pair0:features.6->layer2:mse"]), rel=1e-5)
    w_before = adaptor.weight.numpy().copy()
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert adaptor.weight.grad is not None
    opt.step()
    assert not np.allclose(adaptor.weight.numpy(), w_before)
    after_teacher = _snapshot(teacher)
    for k, v in before_teacher.items():  # weights and BatchNorm statistics untouched
        np.testing.assert_array_equal(after_teacher[k], v, err_msg=k)


def test_weights_scale_the_terms():
    student, teacher = build_tiny_cnn(width=8), build_tiny_cnn(width=8)
    x = paddle.rand([4, 1, 8, 8])
    base = Distiller(student, teacher, {"logits": {"loss": "kl", "temperature": 2.0}})
    base(x)
    scaled = Distiller(student, teacher, {"logits": {"loss": "kl", "temperature": 2.0, "weight": 0.25}})
    scaled(x)
    assert float(scaled.loss()) == pytest.approx(0.25 * float(base.loss()), rel=1e-5)


def test_linear_adaptor_on_transformer_tokens():
    paddle.seed(3)
    student, teacher = TokenEncoder(16), TokenEncoder(32)
    x = paddle.rand([4, 6, 8])
    cfg = DistillConfig.from_dict(
        {
            "logits": {"loss": "dkd"},
            "pairs": [{"student": "encoder.layers.*", "teacher": "encoder.layers.*", "loss": "cosine", "weight": 0.5}],
        }
    )
    d = Distiller(student, teacher, cfg, example_inputs=x)
    assert [p.student for p in d.pairs] == ["encoder.layers.0", "encoder.layers.1"]
    assert sorted(d.adaptors.keys()) == ["p0_0", "p1_0"]
    assert isinstance(d.adaptors["p0_0"], paddle.nn.Linear) and d.adaptors["p0_0"].weight.shape == [16, 32]
    d(x)
    loss = d.loss(labels=paddle.to_tensor([0, 1, 2, 3]))
    loss.backward()
    assert student.embed.weight.grad is not None and teacher.embed.weight.grad is None


def test_fsp_pair_adapts_both_student_maps():
    paddle.seed(4)
    student, teacher = build_tiny_cnn(width=8), build_tiny_cnn(width=16)
    x = paddle.rand([4, 1, 8, 8])
    cfg = {"pairs": [{"student": ["conv1", "conv2"], "teacher": ["conv1", "conv2"], "loss": "fsp"}]}
    d = Distiller(student, teacher, cfg, example_inputs=x)
    assert [tuple(d.adaptors[k].weight.shape) for k in ("p0_0", "p0_1")] == [(16, 8, 1, 1), (32, 16, 1, 1)]
    d(x)
    assert float(d.loss()) > 0


def test_attention_transfer_needs_no_adaptor():
    student, teacher = _mobilenet_resnet()
    x = paddle.rand([2, 3, 32, 32])
    d = Distiller(student, teacher, {"pairs": [{"student": "features.6", "teacher": "layer2", "loss": "at"}]}, example_inputs=x)
    assert len(d.adaptors) == 0


def test_distillation_pulls_student_towards_teacher():
    paddle.seed(5)
    student, teacher = build_tiny_cnn(width=4), build_tiny_cnn(width=16)
    x = paddle.rand([32, 1, 8, 8])
    d = Distiller(student, teacher, {"logits": {"loss": "kl", "temperature": 2.0}, "pairs": [{"student": "fc1", "teacher": "fc1"}]})
    first, last = minimise_distill_loss(d, x, steps=40)
    assert last < 0.3 * first


def test_teacher_with_other_classes_is_rejected():
    student = build_tiny_cnn(num_classes=10)
    teacher = build_tiny_cnn(num_classes=100)
    with pytest.raises(ShapeMismatchError, match=r"teacher output has shape \[2, 100\] but the student output \[2, 10\]"):
        Distiller(student, teacher, DistillConfig(logits=LogitsConfig(temperature=4.0)), example_inputs=paddle.rand([2, 1, 8, 8]))
    d = Distiller(student, teacher, DistillConfig(logits=LogitsConfig()))
    with pytest.raises(ShapeMismatchError, match="same number of classes"):
        d(paddle.rand([2, 1, 8, 8]))


def test_adaptor_needed_without_example_inputs_is_a_clear_error():
    student, teacher = _mobilenet_resnet()
    d = Distiller(student, teacher, ISSUE_FORM)
    with pytest.raises(DistillError, match="pass example_inputs="):
        d(paddle.rand([2, 3, 32, 32]))


@pytest.mark.parametrize(
    "pair,match",
    [
        ({"student": "features.3", "teacher": "layer2"}, "differ outside the channel axis"),
        ({"student": "features.6", "teacher": "layer2", "adaptor": "none"}, "adaptor='none'"),
        ({"student": "features.6", "teacher": "layer2", "loss": "kl"}, "needs equal shapes"),
        ({"student": "features.6", "teacher": "fc", "loss": "mse"}, "no adaptor maps"),
        ({"student": "features.3", "teacher": "layer2", "loss": "at"}, "same batch size and spatial size"),
    ],
    ids=["spatial", "adaptor-off", "exact-loss", "rank", "at-spatial"],
)
def test_incompatible_features_are_clear_errors(pair, match):
    student, teacher = _mobilenet_resnet()
    with pytest.raises(ShapeMismatchError, match=match):
        Distiller(student, teacher, {"pairs": [pair]}, example_inputs=paddle.rand([2, 3, 32, 32]))


def test_loss_before_forward_and_bad_arguments():
    student, teacher = build_tiny_cnn(), build_tiny_cnn()
    d = Distiller(student, teacher, {"logits": {}})
    with pytest.raises(DistillError, match="needs a forward first"):
        d.loss()
    with pytest.raises(Exception, match="same Layer object"):
        Distiller(student, student, {"logits": {}})
    with pytest.raises(Exception, match="must be a paddle.nn.Layer"):
        Distiller(student, "teacher.pdparams", {"logits": {}})


def test_make_adaptor_shapes():
    assert isinstance(make_adaptor([2, 8, 4, 4], [2, 16, 4, 4]), paddle.nn.Conv2D)
    assert make_adaptor([2, 8], [2, 16]).weight.shape == [8, 16]
    assert make_adaptor([2, 5, 8], [2, 5, 16]).weight.shape == [8, 16]
    with pytest.raises(ShapeMismatchError):
        make_adaptor([2, 5, 8], [2, 6, 16])
