"""The INT8 passes of slim_quant.graph_passes, written once, run through both backends (Paddle legacy, ONNX)."""

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from slim_core.model_io import load_inference_model
from slim_quant import PTQConfig, export, quantize
from slim_quant.export import _legacy
from slim_quant.graph_passes import weight_axis

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


class _SEStem(nn.Layer):
    """PaddleClas-style: conv (bias) -> BN -> hardswish, an SE gate with paddle.multiply, a 1x1 conv, pool, fc."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2D(8)
        self.se1 = nn.Conv2D(8, 4, 1)
        self.se2 = nn.Conv2D(4, 8, 1)
        self.pw = nn.Conv2D(8, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.hardswish(self.bn(self.conv(x)))
        s = F.hardsigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(x, 1)))))
        x = F.relu(self.pw(paddle.multiply(x, s)))
        x = F.max_pool2d(x, 2)
        return self.fc(paddle.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _net():
    paddle.seed(3)
    net = _SEStem()
    net.bn._mean.set_value(paddle.uniform([8], min=-0.1, max=0.1))
    net.bn._variance.set_value(paddle.uniform([8], min=0.5, max=1.5))
    net.eval()
    return net


def _onnx_sites(path):
    """{weight: (int8 codes, per-channel threshold, input threshold, conv bias or None)} of a QDQ model."""
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    dq_src = {n.output[0]: n.input for n in m.graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for n in m.graph.node:
        if n.op_type not in ("Conv", "MatMul", "Gemm") or n.input[1] not in dq_src:
            continue
        wq, ws, _ = dq_src[n.input[1]]
        w = wq[: -len("_quantized")]
        xq = dq_src[n.input[0]]
        scale, zp = float(inits[xq[1]]), int(inits[xq[2]])
        act_thr = scale * (255.0 if zp == 0 else 127.0)
        bias = None
        if n.op_type == "Conv" and len(n.input) > 2:
            bq, bs, _ = dq_src[n.input[2]]
            bias = (inits[bq].astype("float64") * inits[bs], inits[bs])  # int32 codes: the value and its step
        out[w] = (inits[wq], inits[ws] * 127.0, act_thr, bias)
    return out


def _paddle_sites(prefix):
    """The same, read from the INT8 legacy program (bias: the conv's bias add, in oneDNN's 1-D form)."""
    src = load_inference_model(prefix)
    val = lambda n: np.array(src.scope.find_var(n).get_tensor())  # noqa: E731
    out = {}
    with _legacy(src.scope):
        block = src.program.global_block()
        ops = list(block.ops)
        producer = {o: op for op in ops for o in op.output_arg_names}
        for op in ops:
            if op.type not in ("conv2d", "depthwise_conv2d", "matmul_v2"):
                continue
            slot_w, slot_x = ("Filter", "Input") if op.type != "matmul_v2" else ("Y", "X")
            wdq = producer.get(op.input(slot_w)[0])
            if wdq is None or wdq.type != "dequantize_linear":
                continue
            w = wdq.input("X")[0]
            act = producer[op.input(slot_x)[0]]  # the input's dequantize_linear
            bias = None
            cons = [c for c in ops if op.output_arg_names[0] in c.input_arg_names]
            if op.type != "matmul_v2" and len(cons) == 1 and cons[0].type == "elementwise_add":
                y = cons[0].input("Y")[0]
                assert block.var(y).persistable and len(block.var(y).shape) == 1 and cons[0].attr("axis") == 1
                bias = val(y)
            out[w] = (val(w), val(wdq.input("Scale")[0]), float(val(act.input("Scale")[0])[0]), bias)
        types = [op.type for op in ops]
    return out, types


def test_one_plan_gives_the_same_int8_sites_scales_and_biases_on_paddle_and_onnx(tmp_path):
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((4, 3, 16, 16)).astype("float32") for _ in range(2)]
    q = quantize(_net(), PTQConfig(), batches)
    res = export(q, tmp_path / "out", formats=("paddle", "onnx"), latency_guard=False)
    assert res.formats == ["paddle", "onnx"] and res.int8_ops["paddle"] == res.int8_ops["onnx"] == 5
    on = _onnx_sites(tmp_path / "out" / "model.onnx")
    pd, types = _paddle_sites(tmp_path / "out" / "model_legacy")
    assert set(on) == set(pd) == {op.split(":", 1)[1] for op in res.quantized_ops["onnx"]}
    assert len(on) == 5
    for w, (codes, thr, act_thr, bias) in on.items():
        p_codes, p_thr, p_act, p_bias = pd[w]
        np.testing.assert_array_equal(codes, p_codes)  # the plan's int8 codes, on both IRs
        np.testing.assert_allclose(thr, p_thr, rtol=1e-6)
        np.testing.assert_allclose(act_thr, p_act, rtol=1e-5)  # the learned input threshold
        if bias is not None:  # fold_affine put the dygraph bias (reshape + add) into the conv on both IRs
            value, step = bias
            assert p_bias is not None and p_bias.shape == value.shape
            assert np.all(np.abs(value - p_bias) <= step)  # ONNX: int32 codes, half a step of rounding
    # bias fusion left no reshape of a bias on either IR
    assert "reshape2" not in types
    m = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert not [n for n in m.graph.node if n.op_type == "Add" and any(i.endswith(".b_0") for i in n.input)]
    # both IRs got more pairs than the quantized inputs: place_activation_qdq found the tensors between INT8 ops
    assert res.qdq_tensors["onnx"] > 5 and res.qdq_tensors["paddle"] > 5
    assert res.agreement["onnx_cosine"] >= 0.99 and res.agreement["paddle_cosine"] >= 0.95


def test_batch_norm_folds_where_the_backend_asks_and_the_conv_bias_moves_into_the_conv(tmp_path):
    """Capabilities.fold_batch_norm: ONNX folds BN into the conv, Paddle legacy leaves it to oneDNN; both fold the bias."""
    from slim_core.runtime import paddle_to_onnx
    from slim_quant.legacy_trace import legacy_ops
    from slim_quant.onnx_qdq import _clean_up, _Graph
    from slim_quant.paddle_int8 import fold_affine_blocks

    net = _net()
    src = tmp_path / "m"
    with legacy_ops(), paddle.pir_utils.OldIrGuard():  # paddle.multiply traces into a legacy program
        paddle.jit.save(net, str(src), input_spec=[paddle.static.InputSpec([None, 3, 16, 16], "float32", "x")])
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype("float32")
    with paddle.no_grad():
        ref = net(paddle.to_tensor(x)).numpy()
    # Paddle legacy: the conv bias in oneDNN's form, BN kept
    m = load_inference_model(src)
    with _legacy(m.scope):
        assert fold_affine_blocks(m.program, m.scope, set()) == 4  # the four convs with a dygraph bias
        types = [op.type for op in m.program.global_block().ops]
        m.program._sync_with_cpp()
    assert "batch_norm" in types and "reshape2" not in types
    np.testing.assert_allclose(m.run({"x": x})[0], ref, rtol=1e-4, atol=1e-5)
    # ONNX: the bias and the BN in the conv
    paddle_to_onnx(src.with_suffix(".pdmodel"), src.with_suffix(".pdiparams"), tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    gr = _Graph(model)
    assert _clean_up(gr) == 4
    ops = [n.op_type for n in gr.g.node]
    assert "BatchNormalization" not in ops and all(len(n.input) == 3 for n in gr.g.node if n.op_type == "Conv")
    onnx.save(model, str(tmp_path / "folded.onnx"))
    import onnxruntime as ort

    got = ort.InferenceSession(str(tmp_path / "folded.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_weight_axis_is_one_rule():
    assert (weight_axis("conv"), weight_axis("conv_transpose"), weight_axis("matmul"), weight_axis("matmul", transposed=True)) == (
        0,
        1,
        1,
        0,
    )
    with pytest.raises(ValueError, match="unknown weight kind"):
        weight_axis("gemm")
