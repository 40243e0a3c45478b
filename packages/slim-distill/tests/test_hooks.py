"""Feature capture by sublayer path: shared layers, inputs, tuple outputs, patterns, bad names."""

import numpy as np
import paddle
import pytest
from distill_models import SharedBlockNet, TupleNet

from slim_distill import DistillConfig, Distiller, DistillError, FeatureRecorder, LayerNotFoundError
from slim_distill.hooks import match_pattern


def _np(t):
    return t.numpy()


def test_layer_used_twice_records_each_call():
    paddle.seed(1)
    net = SharedBlockNet()
    rec = FeatureRecorder(net, "student")
    rec.watch("block")
    x = paddle.rand([3, 4])
    with rec.recording():
        net(x)
    assert rec.num_calls("block") == 2
    first = net.block(x)
    second = net.block(net.act(first))
    np.testing.assert_allclose(_np(rec.get("block", call=0)), _np(first), rtol=1e-6)
    np.testing.assert_allclose(_np(rec.get("block", call=1)), _np(second), rtol=1e-6)
    np.testing.assert_allclose(_np(rec.get("block", call=-1)), _np(second), rtol=1e-6)
    np.testing.assert_allclose(_np(rec.get("block", io="input", call=1)), _np(net.act(first)), rtol=1e-6)
    np.testing.assert_allclose(_np(rec.get("block", io="input", call=0)), _np(x), rtol=1e-6)
    with pytest.raises(DistillError, match="ran 2 times.*student_call"):
        rec.get("block")
    with pytest.raises(DistillError, match="call 2 is out of range"):
        rec.get("block", call=2)


def test_shared_layer_pair_in_a_distiller_compares_the_chosen_calls():
    paddle.seed(2)
    student, teacher = SharedBlockNet(), SharedBlockNet()
    cfg = {"pairs": [{"student": "block", "teacher": "block", "loss": "mse", "student_call": 1, "teacher_call": 0}]}
    x = paddle.rand([5, 4])
    with Distiller(student, teacher, cfg) as d:
        d(x)
        got = float(d.loss())
    s1 = student.block(student.act(student.block(x)))
    t0 = teacher.block(x)
    assert got == pytest.approx(float(((s1 - t0) ** 2).mean()), rel=1e-5)
    with pytest.raises(DistillError, match="ran 2 times"):
        with Distiller(student, teacher, {"pairs": [{"student": "block", "teacher": "head"}]}) as d2:
            d2(x)


def test_tuple_output_needs_an_index():
    net = TupleNet()
    rec = FeatureRecorder(net, "teacher")
    rec.watch("split")
    x = paddle.rand([2, 4])
    with rec.recording():
        net(x)
    np.testing.assert_allclose(_np(rec.get("split", index=1)), _np(x + 1.0), rtol=1e-6)
    np.testing.assert_allclose(_np(rec.get("split", index=0)), _np(x * 2.0), rtol=1e-6)
    with pytest.raises(DistillError, match="tuple of 2 values; set its index"):
        rec.get("split")


def test_hooks_record_only_inside_a_distiller_forward_and_can_be_removed():
    student, teacher = SharedBlockNet(), SharedBlockNet()
    d = Distiller(student, teacher, {"pairs": [{"student": "head", "teacher": "head"}]})
    student(paddle.rand([2, 4]))  # plain use of the student: nothing kept
    assert d._srec.num_calls("head") == 0
    x = paddle.rand([2, 4])
    d(x)
    assert d._srec.num_calls("head") == 0  # the features were taken out and the records dropped
    np.testing.assert_allclose(_np(d._feats[0][0][0]), _np(student(x)), rtol=1e-6)
    d.remove_hooks()
    assert not student.head._forward_post_hooks and not teacher.head._forward_post_hooks


@pytest.mark.parametrize(
    "pattern,expected",
    [
        ("layer?", ["layer1", "layer2", "layer3", "layer4"]),
        ("layer[2-3]", ["layer2", "layer3"]),
        ("layer*.0", ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]),
        ("layer1.*.conv1", ["layer1.0.conv1", "layer1.1.conv1"]),
        ("**.downsample", ["layer2.0.downsample", "layer3.0.downsample", "layer4.0.downsample"]),
    ],
    ids=["question-mark", "class", "star-segment", "star-middle", "double-star"],
)
def test_patterns_match_resnet_paths(pattern, expected):
    names = [n for n, _ in paddle.vision.models.resnet18().named_sublayers()]
    assert match_pattern(pattern, names) == expected


@pytest.mark.parametrize(
    "name,close",
    [("layer5", "'layer1'"), ("layer2.0.conv3", "'layer2.0.conv1'"), ("fc1", "'fc'"), ("bn", "'bn1'")],
    ids=["stage", "nested", "head", "short"],
)
def test_unknown_layer_lists_close_names(name, close):
    student = paddle.vision.models.resnet18(num_classes=10)
    teacher = paddle.vision.models.resnet18(num_classes=10)
    with pytest.raises(LayerNotFoundError, match=f"no sublayer '{name}'.*close names:.*{close}") as info:
        Distiller(student, teacher, {"pairs": [{"student": name, "teacher": "layer1"}]})
    assert "the student (ResNet)" in str(info.value)


def test_unknown_teacher_layer_and_unmatched_pattern():
    student = paddle.vision.models.mobilenet_v2(scale=0.35, num_classes=10)
    teacher = paddle.vision.models.resnet18(num_classes=10)
    with pytest.raises(LayerNotFoundError, match="the teacher.*'layer2'"):
        Distiller(student, teacher, DistillConfig.from_dict({"pairs": [{"student": "features.6", "teacher": "layr2"}]}))
    with pytest.raises(LayerNotFoundError, match="pattern 'stage\\*' matches no sublayer of the teacher"):
        Distiller(student, teacher, {"pairs": [{"student": "features.*", "teacher": "stage*"}]})
    with pytest.raises(Exception, match="matches 19 student layers.*but 4 teacher layers"):
        Distiller(student, teacher, {"pairs": [{"student": "features.*", "teacher": "layer?"}]})


def test_alias_names_reach_the_same_layer():
    net = SharedBlockNet()
    net.alias = net.head  # one layer registered under two names
    rec = FeatureRecorder(net, "student")
    rec.watch("alias")
    rec.watch("head")
    with rec.recording():
        out = net(paddle.rand([2, 4]))
    assert len(net.head._forward_post_hooks) == 1
    np.testing.assert_allclose(_np(rec.get("alias")), _np(out))
