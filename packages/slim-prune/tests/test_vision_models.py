"""Every paddle.vision.models architecture (smallest variant, small inputs) pruned at 30% and 50% FLOPs."""

import paddle
import paddle.vision.models as M
import pytest

from slim_prune import PruneConfig, prune_

ARCHS = {
    "lenet": (lambda: M.LeNet(), [1, 1, 28, 28]),
    "alexnet": (lambda: M.alexnet(num_classes=10), [1, 3, 224, 224]),  # fixed 6x6 classifier input
    "vgg11": (lambda: M.vgg11(num_classes=10), [1, 3, 32, 32]),
    "resnet18": (lambda: M.resnet18(num_classes=10), [1, 3, 32, 32]),
    "resnext50_32x4d": (lambda: M.resnext50_32x4d(num_classes=10), [1, 3, 32, 32]),
    "mobilenet_v1": (lambda: M.mobilenet_v1(scale=0.25, num_classes=10), [1, 3, 32, 32]),
    "mobilenet_v2": (lambda: M.mobilenet_v2(scale=0.25, num_classes=10), [1, 3, 32, 32]),
    "mobilenet_v3_small": (lambda: M.mobilenet_v3_small(scale=0.5, num_classes=10), [1, 3, 32, 32]),
    "mobilenet_v3_large": (lambda: M.mobilenet_v3_large(scale=0.35, num_classes=10), [1, 3, 32, 32]),
    "densenet121": (lambda: M.densenet121(num_classes=10), [1, 3, 32, 32]),
    "shufflenet_v2_x0_25": (lambda: M.shufflenet_v2_x0_25(num_classes=10), [1, 3, 32, 32]),
    "shufflenet_v2_swish": (lambda: M.shufflenet_v2_swish(num_classes=10), [1, 3, 32, 32]),
    "squeezenet1_1": (lambda: M.squeezenet1_1(num_classes=10), [1, 3, 32, 32]),
    "googlenet": (lambda: M.googlenet(num_classes=10), [1, 3, 224, 224]),  # fixed-size classifier
    "inception_v3": (lambda: M.inception_v3(num_classes=10), [1, 3, 64, 64]),
}


def _shapes(out):
    return [list(o.shape) for o in out] if isinstance(out, (list, tuple)) else [list(out.shape)]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_prune_vision_model_30_then_50_percent_flops(arch, tmp_path):
    """Prune 30% of the FLOPs, check, then prune on to 50% of the original FLOPs, check and export.

    Continuing from the 30% model (instead of building and tracing twice) keeps the suite fast
    and also exercises pruning an already pruned model.
    """
    build, shape = ARCHS[arch]
    model = build()
    model.eval()
    x = paddle.randn(shape)
    before = _shapes(model(x))
    first = prune_(model, PruneConfig(flops_ratio=0.3), x)
    assert first.flops_ratio == pytest.approx(0.3, rel=0.05), first.summary()
    assert first.params_after < first.params_before and first.channels
    assert _shapes(model(x)) == before
    # 50% of the original FLOPs = removing 1 - 0.5 / 0.7 of what is left (relative to the measured value)
    rest = 1.0 - 0.5 * first.flops_before / first.flops_after
    second = prune_(model, PruneConfig(flops_ratio=rest), x)
    total = 1.0 - second.flops_after / first.flops_before
    assert total == pytest.approx(0.5, rel=0.05), second.summary()
    model.eval()
    assert _shapes(model(x)) == before
    paddle.jit.save(model, str(tmp_path / arch), input_spec=[paddle.static.InputSpec([None, *shape[1:]], "float32", "x")])
    assert (tmp_path / f"{arch}.pdiparams").stat().st_size > 0
