"""A model with a while loop quantizes on both routes: the ops outside the loop go INT8, the loop body
stays float and the reason is recorded (Paddle: the ``while`` sub-block; ONNX: paddle2onnx's ``Loop``)."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

import slim_quant
from slim_core.graph.zoo_nets import LoopDecoder


def _batches(n=4):
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((1, 16)).astype("float32")} for _ in range(n)]


X = np.random.default_rng(1).standard_normal((1, 16)).astype("float32")  # a fresh input, not a calibration batch


@pytest.fixture(scope="module")
def legacy_loop_model(tmp_path_factory):
    """LoopDecoder saved as a legacy inference model (its loop becomes a ``while`` op), its float output on ``X`` and the
    weight names of its encoder and head (Paddle's name counter depends on what ran before in the process)."""
    paddle.seed(0)
    model = LoopDecoder()
    model.eval()
    with paddle.no_grad():
        want = model(paddle.to_tensor(X)).numpy()
    prefix = tmp_path_factory.mktemp("loop") / "src" / "model"
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(model, str(prefix), input_spec=[paddle.static.InputSpec([1, 16], "float32", "x")])
    return prefix, want, (model.enc.weight.name, model.head.weight.name)


def _run_onnx(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_while_loop_body_stays_float_with_reason(legacy_loop_model, tmp_path):
    legacy_loop_model, _, names = legacy_loop_model
    res = slim_quant.quantize_inference_model(
        legacy_loop_model, slim_quant.PTQConfig(), _batches(), tmp_path / "int8", formats=("paddle",), latency_guard=False
    )
    assert res.quantized_ops["paddle"] == [f"matmul_v2:{w}" for w in names]  # enc and head, not the cell
    (key,) = [k for k in res.skipped["paddle"] if k.startswith("while")]
    assert "kept in float" in res.skipped["paddle"][key]
    assert res.agreement["paddle_top1_agreement"] == 1.0


def test_onnx_route_quantizes_around_the_loop(legacy_loop_model, tmp_path):
    import onnx

    legacy_loop_model, want, names = legacy_loop_model
    res = slim_quant.quantize_inference_model(
        legacy_loop_model, slim_quant.PTQConfig(), _batches(), tmp_path / "int8", formats=("onnx",), latency_guard=False
    )
    assert res.formats == ["onnx"] and not res.skipped_formats
    assert res.quantized_ops["onnx"] == [f"MatMul:{w}" for w in names]  # enc and head; the cell is in the Loop
    (key,) = res.skipped["onnx"]
    assert key.startswith("Loop") and "kept in float" in res.skipped["onnx"][key]
    model = onnx.load(str(tmp_path / "int8" / "model.onnx"))
    (loop,) = [n for n in model.graph.node if n.op_type == "Loop"]
    body_ops = {n.op_type for n in loop.attribute[0].g.node}
    assert "MatMul" in body_ops and not body_ops & {"QuantizeLinear", "DequantizeLinear"}
    assert sum(n.op_type == "DequantizeLinear" for n in model.graph.node) >= 2
    got = _run_onnx(tmp_path / "int8" / "model.onnx", X)  # the INT8 ONNX model against the float model
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()
    assert res.agreement["onnx_top1_agreement"] == 1.0


def test_dygraph_loop_exports_with_float_loop(tmp_path):
    paddle.seed(0)
    model = LoopDecoder()
    model.eval()
    with paddle.no_grad():
        want = model(paddle.to_tensor(X)).numpy()
    slim_quant.quantize_(model, slim_quant.PTQConfig(), [b["x"] for b in _batches()])
    res = slim_quant.export(model, tmp_path / "int8", formats=("onnx", "paddle"), latency_guard=False)
    assert res.formats == ["onnx", "paddle"] and not res.skipped_formats
    assert len(res.quantized_ops["onnx"]) == len(res.quantized_ops["paddle"]) == 2  # enc and head; the cell runs in the loop
    (key,) = res.skipped["onnx"]
    assert key.startswith("Loop") and "kept in float" in res.skipped["onnx"][key]
    (key,) = res.skipped["paddle"]
    assert key.startswith("while") and "kept in float" in res.skipped["paddle"][key]
    got = _run_onnx(tmp_path / "int8" / "model.onnx", X)
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()


def test_onnx_if_branches_stay_float_and_read_renamed_outer_tensors(tmp_path):
    """An ``If`` whose branches read outer tensors: an initializer used only there, and the output of an
    ``Identity`` the clean-up removes (the branches then read its input); the rest is quantized."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from slim_quant.graph_passes import QuantPlan
    from slim_quant.onnx_qdq import quantize_onnx_model

    rng = np.random.default_rng(0)
    w = {f"w{i}": rng.standard_normal((16, 16)).astype("float32") * 0.3 for i in range(3)}
    then_g = helper.make_graph(
        [helper.make_node("MatMul", ["h_id", "w1"], ["branch_out"])], "then", [], [helper.make_tensor_value_info("branch_out", 1, None)]
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["h_id"], ["else_out"])], "else", [], [helper.make_tensor_value_info("else_out", 1, None)]
    )
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["m0"]),
        helper.make_node("Relu", ["m0"], ["h"]),
        helper.make_node("Identity", ["h"], ["h_id"]),
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["b"], then_branch=then_g, else_branch=else_g),
        helper.make_node("MatMul", ["b", "w2"], ["y"]),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()] + [numpy_helper.from_array(np.array(0.0, "float32"), "zero")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "fp32.onnx"))
    # calibration takes both branches (the sign of sum(x) picks one)
    batches = [{"x": rng.standard_normal((1, 16)).astype("float32") + shift} for shift in (0.5, -0.5) * 4]
    info = quantize_onnx_model(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", batches, QuantPlan())
    assert info["quantized_ops"] == ["MatMul:w0", "MatMul:w2"]
    (key,) = info["float_blocks"]
    assert key.startswith("If") and info["float_blocks"][key].startswith("2 ops inside the If subgraph")
    pos = next(b["x"] for b in batches if b["x"].sum() > 0)
    neg = next(b["x"] for b in batches if b["x"].sum() < 0)
    for x in (pos, neg):  # the then and the else branch, in the calibrated range
        want, got = _run_onnx(tmp_path / "fp32.onnx", x), _run_onnx(tmp_path / "int8.onnx", x)
        assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()
