import numpy as np
import paddle
import pytest

from slim_core import ModelLoadError, convert_to_pir, detect_format, load_inference_model, load_state_dict, save_inference_model
from slim_core.errors import OutputExistsError


def _net():
    paddle.seed(0)
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.ReLU(), paddle.nn.Flatten(), paddle.nn.Linear(4 * 6 * 6, 5))
    net.eval()
    return net


SPEC = [paddle.static.InputSpec([None, 3, 8, 8], "float32", "x")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    net = _net()
    paddle.jit.save(net, str(root / "pir" / "model"), input_spec=SPEC)
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(net, str(root / "legacy" / "model"), input_spec=SPEC)
    x = np.random.default_rng(0).random((2, 3, 8, 8), dtype="float32")
    ref = net(paddle.to_tensor(x)).numpy()
    return root, x, ref


@pytest.mark.parametrize("fmt", ["pir", "legacy"])
def test_load_and_run_both_formats(models, fmt):
    root, x, ref = models
    for path in (root / fmt / "model", root / fmt):  # prefix or directory
        m = load_inference_model(path)
        assert m.format == fmt and detect_format(path) == fmt
        assert m.input_names == ["x"]
        np.testing.assert_allclose(m.run({"x": x})[0], ref, atol=1e-5)
        np.testing.assert_allclose(m.run([x[:1]])[0], ref[:1], atol=1e-5)  # dynamic batch
    assert paddle.in_dynamic_mode()  # loading must not leave Paddle in static mode


def test_parameters_listed(models):
    root, _, _ = models
    params = load_inference_model(root / "pir" / "model").parameters()
    assert sorted(a.shape for a in params.values()) == sorted([(4, 3, 3, 3), (4,), (144, 5), (5,)])


def test_convert_legacy_to_pir(models, tmp_path):
    root, x, ref = models
    out = convert_to_pir(root / "legacy" / "model", tmp_path / "conv" / "model")
    m = load_inference_model(out)
    assert m.format == "pir"
    np.testing.assert_allclose(m.run([x])[0], ref, atol=1e-5)


def test_save_refuses_overwrite(models, tmp_path):
    root, x, ref = models
    m = load_inference_model(root / "pir" / "model")
    out = save_inference_model(m, tmp_path / "copy")
    np.testing.assert_allclose(load_inference_model(out).run([x])[0], ref, atol=1e-5)
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        save_inference_model(m, tmp_path / "copy")


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model file not found: neither .*nope.json nor .*nope.pdmodel"):
        load_inference_model(tmp_path / "nope")


def test_missing_params_file(models, tmp_path):
    root, _, _ = models
    (tmp_path / "m.json").write_bytes((root / "pir" / "model.json").read_bytes())
    with pytest.raises(ModelLoadError, match=r"parameter file not found: .*m.pdiparams"):
        load_inference_model(tmp_path / "m")


@pytest.mark.parametrize("fmt,suffix", [("pir", ".json"), ("legacy", ".pdmodel")])
def test_truncated_params(models, tmp_path, fmt, suffix):
    root, _, _ = models
    (tmp_path / f"m{suffix}").write_bytes((root / fmt / f"model{suffix}").read_bytes())
    data = (root / fmt / "model.pdiparams").read_bytes()
    (tmp_path / "m.pdiparams").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"m\.pdiparams"):
        load_inference_model(tmp_path / "m")


def test_corrupt_model_file(models, tmp_path):
    root, _, _ = models
    (tmp_path / "m.json").write_text("{ this is not a program")
    (tmp_path / "m.pdiparams").write_bytes((root / "pir" / "model.pdiparams").read_bytes())
    with pytest.raises(ModelLoadError, match=r"m\.json"):
        load_inference_model(tmp_path / "m")


def test_state_dict_needs_opt_in(tmp_path):
    path = tmp_path / "w.pdparams"
    paddle.save(_net().state_dict(), str(path))
    with pytest.raises(ModelLoadError, match="pickle"):
        load_state_dict(path)
    state = load_state_dict(path, allow_pickle=True)
    assert "0.weight" in state
    path.write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="could not read weights file"):
        load_state_dict(path, allow_pickle=True)


def test_check_model_files_accepts_a_model_without_parameters(tmp_path):
    import paddle

    from slim_core.model_io import check_model_files

    class NoParams(paddle.nn.Layer):
        def forward(self, x):
            return x * 2.0

    paddle.jit.save(NoParams(), str(tmp_path / "m"), input_spec=[paddle.static.InputSpec([None, 4], "float32", "x")])
    assert not (tmp_path / "m.pdiparams").exists()  # Paddle writes none
    check_model_files(tmp_path / "m.json", tmp_path / "m.pdiparams")
