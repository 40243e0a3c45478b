"""Weight-only ONNX export: DequantizeLinear+MatMul and MatMulNBits graphs that ONNX Runtime and OpenVINO fuse."""

from __future__ import annotations

import doctest
import importlib.util
import json
import warnings

import numpy as np
import paddle
import pytest

from slim_core import ConfigError, ExportError, OutputExistsError, set_quiet
from slim_quant.weight_only import SmoothQuantConfig, WeightOnlyConfig, export_weight_only, quantize_weight_only_, smooth_quant_
from slim_quant.weight_only.bert import BertEncoder, BertSettings

pytest.importorskip("onnxruntime")
pytest.importorskip("paddle2onnx")
onnx = pytest.importorskip("onnx")
set_quiet()

HAS_OV = importlib.util.find_spec("openvino") is not None
NAMES = ["input_ids", "attention_mask"]
EXACT_OV = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 0, "INFERENCE_PRECISION_HINT": "f32"}  # float activations, no bf16


def _bert() -> paddle.nn.Layer:
    """2-layer BERT (hidden 64, hand-written attention with reshape + paddle.matmul, LayerList blocks)."""
    paddle.seed(0)
    model = BertEncoder(BertSettings(vocab_size=200, hidden=64, layers=2, heads=4, intermediate=128, max_positions=32))
    model.eval()
    return model


def _data(n: int = 2, batch: int = 4, seq: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        ids = rng.integers(1, 200, size=(batch, seq)).astype("int64")
        mask = np.ones((batch, seq), "int64")
        mask[:, seq - 4 :] = 0
        out.append((ids, mask))
    return out


def _quantized(cfg: WeightOnlyConfig) -> paddle.nn.Layer:
    model = _bert()
    quantize_weight_only_(model, cfg, _data() if cfg.needs_data else None, input_names=NAMES)
    return model


def _run_dygraph(model, ids, mask):
    with paddle.no_grad():
        return model(paddle.to_tensor(ids), paddle.to_tensor(mask)).numpy()


def _runtimes():
    return ("onnxruntime", "openvino") if HAS_OV else ("onnxruntime",)


CASES = [
    ("qdq", WeightOnlyConfig(bits=8)),  # per-channel int8: per-axis DequantizeLinear
    ("qdq", WeightOnlyConfig(bits=4, group_size=32, symmetric=False)),  # blocked uint4 with zero points
    ("matmulnbits", WeightOnlyConfig(bits=4, group_size=32, algo="awq")),  # AWQ input scale -> Mul before the matmul
    ("matmulnbits", WeightOnlyConfig(bits=8, group_size=32, symmetric=False)),
    ("qdq", WeightOnlyConfig(bits=4, group_size=32, symmetric=False, algo="gptq", keep_8bit=("layers.1.output",))),  # mixed
]


@pytest.mark.parametrize("form,cfg", CASES, ids=["qdq-w8", "qdq-w4-asym", "nbits-w4-awq", "nbits-w8-asym", "qdq-w4-keep-8bit"])
def test_exported_codes_match_dygraph_and_runtimes_fuse(tmp_path, form, cfg):
    """With float compute (no int8 activations) the runtimes reproduce the dygraph model: the codes, scales,
    zero points and packing are exact; every quantized matmul runs in a compressed-weight kernel."""
    model = _quantized(cfg)
    ids, mask = _data(1, batch=3, seq=12)[0]
    res = export_weight_only(
        model,
        tmp_path / "out",
        (ids, mask),
        input_names=NAMES,
        dynamic_dims=(0, 1),
        form=form,
        accuracy_level=0,
        openvino_options=EXACT_OV,
        runtimes=_runtimes(),
    )
    assert len(res.layers) == 12
    for rt in _runtimes():
        assert res.agreement[f"{rt}_rel_err"] < 1e-4, res.agreement
    assert res.kernels["onnxruntime"]["MatMulNBits"] == 12, res.kernels
    if HAS_OV:
        assert res.kernels["openvino"]["FullyConnected_compressed"] == 12, res.kernels
    # the file holds integer weights only for the quantized layers: no float [64, 64] / [64, 128] matrix is left
    proto = onnx.load(str(tmp_path / "out" / "model.onnx"))
    float_mats = [i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2 and i.dims[0] == 64]
    assert float_mats == [], float_mats
    ops = {n.op_type for n in proto.graph.node}
    assert ("MatMulNBits" in ops) == (form == "matmulnbits") and ("DequantizeLinear" in ops) == (form == "qdq")
    # other shapes through the dynamic batch and sequence dimensions
    from slim_quant.weight_only.onnx_export import runner

    ids2, mask2 = _data(1, batch=2, seq=20)[0]
    got = runner("onnxruntime", tmp_path / "out" / "model.onnx", options=res.runtime_options["onnxruntime"])(
        {"input_ids": ids2, "attention_mask": mask2}
    )
    ref = _run_dygraph(model, ids2, mask2)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_default_fast_path_agrees_and_writes_manifest(tmp_path, monkeypatch, where):
    from slim_deploy.manifest import read_manifest

    model = _quantized(WeightOnlyConfig(bits=4, group_size=32, algo="gptq"))
    monkeypatch.chdir(tmp_path)
    path = "exports/bert_w4" if where == "relative" else tmp_path / "exports" / "bert_w4"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the latency guard may warn on a loaded machine (tiny model)
        res = export_weight_only(model, path, _data(1)[0], input_names=NAMES, dynamic_dims=(0, 1), latency_guard=(where == "absolute"))
    out = tmp_path / "exports" / "bert_w4"
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "slim.json"]
    assert res.file_bytes["model.onnx"] == (out / "model.onnx").stat().st_size
    for rt in _runtimes():
        # int8 activations inside the fused kernels: close, not exact
        assert res.agreement[f"{rt}_cosine_min"] > 0.999, res.agreement
    m = read_manifest(out)
    assert m.format == "onnx" and m.int8 is False
    assert m.inputs == [
        {"name": "input_ids", "shape": [-1, -1], "dtype": "int64"},
        {"name": "attention_mask", "shape": [-1, -1], "dtype": "int64"},
    ]
    wo = m.compression["weight_only"]
    assert wo["form"] == "qdq" and wo["config"]["bits"] == 4 and wo["config"]["algo"] == "gptq"
    assert len(wo["layers"]) == 12 and wo["runtime_options"]["openvino"] == {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "128"}
    assert m.verification["kernels"]["onnxruntime"]["MatMulNBits"] == 12
    # slim-deploy runs the directory as it is
    from slim_deploy.predictor import Predictor

    ids, mask = _data(1)[0]
    pred = Predictor(path, threads=1)
    got = pred.run([ids, mask])[0]
    pred.close()
    ref = _run_dygraph(model, ids, mask)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() > 0.999, cos
    if "openvino" in _runtimes():  # the settings the export recorded are the ones OpenVINO compiles with
        ov = Predictor(path, backend="openvino", threads=1)
        assert ov._runner_obj.config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "128"
        got = ov.run([ids, mask])[0]
        ov.close()
        assert ((got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))).min() > 0.999
    if where == "absolute":
        assert set(res.latency_ms) == {f"{rt}_{k}" for rt in _runtimes() for k in ("fp32", "weight_only")}
        assert all(v > 0 for v in res.latency_ms.values())
        assert json.loads((out / "slim.json").read_text())["verification"]["latency_ms"] == res.latency_ms


def test_existing_directory_is_kept_unless_overwrite(tmp_path):
    model = _quantized(WeightOnlyConfig(bits=8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        export_weight_only(model, out, _data(1)[0], input_names=NAMES, runtimes=())
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    res = export_weight_only(model, out, _data(1)[0], input_names=NAMES, runtimes=(), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "slim.json"]
    assert res.agreement == {} and res.kernels == {}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


@pytest.mark.parametrize("inside", [False, True], ids=["smooth_quant_-then-rtn", "WeightOnlyConfig.smooth_alpha"])
def test_smooth_quant_then_weight_only_exports_the_input_scaling(tmp_path, inside):
    """SmoothQuant's per-channel input division stays in the graph (a Mul before each compressed matmul); q/k/v
    read one tensor and share their factors, so they share one Mul (8 Muls for 12 matmuls in 2 blocks)."""
    model = _bert()
    if inside:
        quantize_weight_only_(model, WeightOnlyConfig(bits=8, smooth_alpha=0.5), _data(), input_names=NAMES)
        assert model.slim_weight_only.config["smooth_alpha"] == 0.5
    else:
        smooth_quant_(model, SmoothQuantConfig(alpha=0.5), _data(), input_names=NAMES)
        quantize_weight_only_(model, WeightOnlyConfig(bits=8), input_names=NAMES)
    att = model.layers[0].attention
    np.testing.assert_array_equal(att.query.input_scale.numpy(), att.value.input_scale.numpy())
    ids, mask = _data(1)[0]
    res = export_weight_only(
        model, tmp_path / "sq", (ids, mask), input_names=NAMES, dynamic_dims=(0, 1), accuracy_level=0, openvino_options=EXACT_OV
    )
    assert sorted(res.layers) == sorted(n for n, _ in model.named_sublayers() if n.endswith(".linear"))
    for rt in _runtimes():
        assert res.agreement[f"{rt}_rel_err"] < 1e-4, res.agreement
    proto = onnx.load(str(tmp_path / "sq" / "model.onnx"))
    matmul_inputs = [n.input[0] for n in proto.graph.node if n.name.endswith(".matmul")]
    producers = {o: n for n in proto.graph.node for o in n.output}

    def source(name: str):
        while producers[name].op_type == "Identity":
            name = producers[name].input[0]
        return producers[name]

    assert len(matmul_inputs) == 12 and {source(a).op_type for a in matmul_inputs} == {"Mul"}
    assert len({source(a).output[0] for a in matmul_inputs}) == 8  # q/k/v of each block read one Mul


def test_two_dimensional_mlp_and_plain_linear_layers():
    """A Sequential MLP on [batch, features] input (paddle2onnx must still emit MatMul, not Gemm); skipped layers stay float."""
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Linear(64, 128), paddle.nn.GELU(), paddle.nn.Linear(128, 32))
    model.eval()
    quantize_weight_only_(model, WeightOnlyConfig(bits=4, group_size=64, skip=("2",)))
    x = np.random.default_rng(0).normal(size=(5, 64)).astype("float32")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        res = export_weight_only(model, f"{d}/mlp", x, form="matmulnbits", accuracy_level=0, openvino_options=EXACT_OV)
    assert list(res.layers) == ["0"]
    assert res.kernels["onnxruntime"]["MatMulNBits"] == 1 and res.agreement["onnxruntime_rel_err"] < 1e-4


def test_bad_inputs_raise_clear_errors(tmp_path):
    plain = _bert()
    with pytest.raises(ConfigError, match="no WeightOnlyLinear"):
        export_weight_only(plain, tmp_path / "a", _data(1)[0], input_names=NAMES)
    model = _quantized(WeightOnlyConfig(bits=8))
    with pytest.raises(ConfigError, match="form"):
        export_weight_only(model, tmp_path / "a", _data(1)[0], input_names=NAMES, form="gguf")
    with pytest.raises(ConfigError, match="runtime"):
        export_weight_only(model, tmp_path / "a", _data(1)[0], input_names=NAMES, runtimes=("tensorrt",))
    paddle.seed(0)
    odd = paddle.nn.Sequential(paddle.nn.Linear(48, 8))
    quantize_weight_only_(odd, WeightOnlyConfig(bits=8, group_size=24))
    with pytest.raises(ExportError, match="form='qdq'"):
        export_weight_only(odd, tmp_path / "a", np.ones((2, 48), "float32"), form="matmulnbits")
    assert not (tmp_path / "a").exists()


def test_group_size_without_power_of_two_block_exports_as_qdq(tmp_path):
    """Group 24 has no MatMulNBits block; the QDQ form still carries it (ONNX Runtime then dequantizes at run time)."""
    paddle.seed(0)
    odd = paddle.nn.Sequential(paddle.nn.Linear(48, 8))
    quantize_weight_only_(odd, WeightOnlyConfig(bits=8, group_size=24))
    x = np.random.default_rng(1).normal(size=(3, 48)).astype("float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = export_weight_only(odd, tmp_path / "q", x, runtimes=("onnxruntime",))
    assert res.agreement["onnxruntime_rel_err"] < 1e-4
    fused = res.kernels["onnxruntime"]["MatMulNBits"]
    assert fused == 1 or any("compressed-weight kernel" in str(w.message) for w in caught)


def test_docs_examples_run():
    from slim_quant.weight_only import onnx_export

    result = doctest.testmod(onnx_export, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
