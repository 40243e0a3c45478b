"""Shared fixtures: small real models and one export per model in every format (module-scoped: exports are slow)."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

import slim_deploy
from slim_core.demo import build_tiny_cnn

FORMATS = ["paddle", "paddle-legacy", "onnx"]


def _resnet18():
    return paddle.vision.models.resnet18(num_classes=10), [None, 3, 32, 32]


def _mobilenet_v2():
    return paddle.vision.models.mobilenet_v2(scale=0.5, num_classes=10), [None, 3, 32, 32]


def _tiny_cnn():
    return build_tiny_cnn(num_classes=10, width=8), [None, 1, 8, 8]


MODELS = {"resnet18": _resnet18, "mobilenet_v2": _mobilenet_v2, "tiny_cnn": _tiny_cnn}


def randomize_bn(model, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters (random init leaves them at 0/1)."""
    rng = np.random.default_rng(seed)
    for sub in model.sublayers():
        if isinstance(sub, paddle.nn.layer.norm._BatchNormBase):
            c = sub._mean.shape[0]
            sub._mean.set_value(rng.normal(0, 0.1, c).astype("float32"))
            sub._variance.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))
            if sub.weight is not None:
                sub.weight.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))
                sub.bias.set_value(rng.normal(0, 0.1, c).astype("float32"))


@pytest.fixture(scope="session", params=list(MODELS), ids=list(MODELS))
def exported(request, tmp_path_factory):
    """(model in eval mode, input shape, export result with all three formats)."""
    paddle.seed(0)
    model, spec = MODELS[request.param]()
    randomize_bn(model)
    model.eval()
    out = tmp_path_factory.mktemp(request.param) / "export"
    result = slim_deploy.export(model, out, spec, format=FORMATS, compression={"note": "none"})
    return model, spec, result


def inputs_for(spec, batch: int, seed: int = 1) -> np.ndarray:
    shape = [batch] + [int(d) for d in spec[1:]]
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def layer_out(model, x: np.ndarray) -> np.ndarray:
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()
