import numpy as np
import paddle
import paddle.vision.models as M
import pytest

from slim_core import ModelLoadError, OutputExistsError
from slim_prune import PruneConfig, TransformerPruneConfig, load_pruned, prune_, prune_transformer_, save_pruned


@pytest.mark.parametrize(
    "build",
    [lambda: M.resnet18(num_classes=10), lambda: M.mobilenet_v2(scale=0.25, num_classes=10)],
    ids=["resnet18", "mobilenetv2-depthwise"],
)
def test_save_and_load_pruned_round_trip(build, tmp_path):
    model = build()
    x = paddle.randn([1, 3, 32, 32])
    res = prune_(model, PruneConfig(flops_ratio=0.5), x)
    model.eval()
    save_pruned(model, tmp_path / "pruned", extra=res.to_dict())
    assert not any(p.suffix == ".pkl" for p in (tmp_path / "pruned").iterdir())
    loaded = load_pruned(build, tmp_path / "pruned")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(OutputExistsError):
        save_pruned(model, tmp_path / "pruned")
    save_pruned(model, tmp_path / "pruned", overwrite=True)


def test_load_pruned_transformer(tmp_path):
    def build():
        return paddle.nn.TransformerEncoder(paddle.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0), 2)

    model = build()
    prune_transformer_(model, TransformerPruneConfig(head_ratio=0.5, ffn_ratio=0.25))
    model.eval()
    save_pruned(model, tmp_path / "enc")
    loaded = load_pruned(build, tmp_path / "enc")
    x = paddle.randn([2, 3, 32])
    assert loaded.layers[0].self_attn.num_heads == 2
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_load_pruned_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_pruned(lambda: M.resnet18(), tmp_path / "nothing")
    model = M.mobilenet_v2(scale=0.25, num_classes=10)
    prune_(model, PruneConfig(ratio=0.3), paddle.randn([1, 3, 32, 32]))
    save_pruned(model, tmp_path / "mb")
    with pytest.raises(ModelLoadError, match="does not have|does not fit"):
        load_pruned(lambda: M.resnet18(num_classes=10), tmp_path / "mb")
    (tmp_path / "mb" / "prune_spec.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a slim-prune spec"):
        load_pruned(lambda: M.mobilenet_v2(scale=0.25, num_classes=10), tmp_path / "mb")
