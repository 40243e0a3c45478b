"""BRECQ: block-wise reconstruction on residual and inverted-residual models."""

import numpy as np
import paddle
import pytest
from conftest import rel_err

from slim_core.errors import ConfigError
from slim_core.params_file import read_params_file
from slim_quant import PTQConfig, ReconstructionConfig, export, quantize
from slim_quant.reconstruction import reconstruction_blocks

nn = paddle.nn


class TinyResNet(nn.Layer):
    """Stem conv, two BasicBlocks (the second with a strided 1x1 downsample), linear head."""

    def __init__(self) -> None:
        super().__init__()
        from paddle.vision.models.resnet import BasicBlock

        self.stem = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU())
        down = nn.Sequential(nn.Conv2D(8, 16, 1, stride=2, bias_attr=False), nn.BatchNorm2D(16))
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 16, stride=2, downsample=down))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(paddle.flatten(nn.functional.adaptive_avg_pool2d(self.layer1(self.stem(x)), 1), 1))


class TinyMobileNet(nn.Layer):
    """Stem conv, two MobileNetV2 InvertedResiduals (depthwise convs, one residual add), linear head."""

    def __init__(self) -> None:
        super().__init__()
        from paddle.vision.models.mobilenetv2 import InvertedResidual

        self.stem = nn.Conv2D(3, 8, 3, padding=1)
        self.features = nn.Sequential(InvertedResidual(8, 8, 1, 4), InvertedResidual(8, 16, 2, 4))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(paddle.flatten(nn.functional.adaptive_avg_pool2d(self.features(nn.functional.relu(self.stem(x))), 1), 1))


AUTO_BLOCKS = {
    "resnet": {
        "stem.0": ["stem.0"],
        "layer1.0": ["layer1.0.conv1", "layer1.0.conv2"],
        "layer1.1": ["layer1.1.conv1", "layer1.1.conv2", "layer1.1.downsample.0"],
        "fc": ["fc"],
    },
    "mobilenet": {
        "stem": ["stem"],
        "features.0": ["features.0.conv.0.0", "features.0.conv.1.0", "features.0.conv.2"],  # the residual add is inside
        "features.1": ["features.1.conv.0.0", "features.1.conv.1.0", "features.1.conv.2"],
        "fc": ["fc"],
    },
}


def _model(arch):
    paddle.seed(0)
    model = TinyResNet() if arch == "resnet" else TinyMobileNet()
    rng = np.random.default_rng(0)
    for layer in model.sublayers():  # non-trivial BN statistics, so that folding changes the weights
        if isinstance(layer, nn.BatchNorm2D):
            n = layer._mean.shape[0]
            layer._mean.set_value(rng.normal(0, 0.2, n).astype("float32"))
            layer._variance.set_value(rng.uniform(0.5, 2.0, n).astype("float32"))
            layer.weight.set_value(rng.uniform(0.5, 1.5, n).astype("float32"))
    model.eval()
    return model, [rng.standard_normal((16, 3, 12, 12)).astype("float32") for _ in range(3)]


def _error(model, q, x):
    with paddle.no_grad():
        return rel_err(q(paddle.to_tensor(x)).numpy(), model(paddle.to_tensor(x)).numpy())


@pytest.mark.parametrize("arch", ["resnet", "mobilenet"])
def test_brecq_finds_blocks_and_beats_nearest(arch):
    model, batches = _model(arch)
    nearest = quantize(model, PTQConfig(weight_bits=3), batches)
    rc = ReconstructionConfig(method="brecq", iters=80, batches=2)
    learned = quantize(model, PTQConfig(weight_bits=3, reconstruction=rc), batches)
    assert reconstruction_blocks(learned) == AUTO_BLOCKS[arch]
    m = learned.slim_quant_state.metrics
    assert m["brecq_blocks"] == 2
    assert m["brecq_output_mse_learned"] < m["brecq_output_mse_nearest"]  # summed over the blocks, same inputs
    assert _error(model, learned, batches[2]) < 0.8 * _error(model, nearest, batches[2])  # held-out batch


def test_explicit_blocks_and_plain_brecq_without_drop():
    model, batches = _model("resnet")
    rc = ReconstructionConfig(method="brecq", iters=60, batches=2, drop_prob=0.0, blocks=("layer1", "fc"))
    q = quantize(model, PTQConfig(weight_bits=3, reconstruction=rc), batches)
    units = reconstruction_blocks(q, rc.blocks)
    assert list(units) == ["layer1", "fc", "stem.0"]
    assert len(units["layer1"]) == 5
    m = q.slim_quant_state.metrics
    assert m["brecq_blocks"] == 1 and m["brecq_output_mse_learned"] < m["brecq_output_mse_nearest"]


def test_bad_block_names_are_config_errors():
    model, batches = _model("resnet")

    def run(**kw):
        quantize(model, PTQConfig(reconstruction=ReconstructionConfig(method="brecq", iters=1, **kw)), batches)

    with pytest.raises(ConfigError, match=r"'layer1\.0\.conv_1'.*did you mean 'layer1\.0\.conv1'"):
        run(blocks=("layer1.0.conv_1",))
    with pytest.raises(ConfigError, match="overlap"):
        run(blocks=("layer1", "layer1.0"))
    with pytest.raises(ConfigError, match="holds no layer to quantize"):
        run(blocks=("layer1.0.bn1",))
    with pytest.raises(ConfigError, match="only used by method='brecq'"):
        ReconstructionConfig(method="qdrop", blocks=("layer1",))
    assert not hasattr(model, "slim_quant_state")  # checked before the model changed


def test_brecq_model_exports_with_int8_weights(tmp_path):
    model, batches = _model("mobilenet")
    q = quantize(model, PTQConfig(reconstruction=ReconstructionConfig(method="brecq", iters=20, batches=1)), batches)
    res = export(q, tmp_path / "out", formats=("paddle", "onnx"), latency_guard=False)
    assert len(res.quantized_ops["paddle"]) == 8
    recs = read_params_file(tmp_path / "out" / "model_legacy.pdiparams")
    assert sum(r.dtype == "int8" for r in recs) == 8  # every conv/linear weight on disk as int8
    assert [r for r in recs if r.dtype != "int8" and len(r.shape) > 1] == []  # and no float copy of one
    # random weights give near-flat logits; the runtimes deviate more from the simulation than on trained nets
    assert res.agreement["onnx_rel_err"] < 0.1
    assert res.agreement["paddle_rel_err"] < 0.4
