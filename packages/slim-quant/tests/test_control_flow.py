"""A legacy inference model with a while loop quantizes on the Paddle route: the ops outside the
loop go INT8, the loop body stays float and the reason is recorded."""

from __future__ import annotations

import numpy as np
import paddle

import slim_quant
from slim_core.graph.zoo_nets import LoopDecoder


def test_while_loop_body_stays_float_with_reason(tmp_path):
    paddle.seed(0)
    model = LoopDecoder()
    model.eval()
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(model, str(tmp_path / "src" / "model"), input_spec=[paddle.static.InputSpec([1, 16], "float32", "x")])
    rng = np.random.default_rng(0)
    batches = [{"x": rng.standard_normal((1, 16)).astype("float32")} for _ in range(4)]
    res = slim_quant.quantize_inference_model(
        tmp_path / "src" / "model", slim_quant.PTQConfig(), batches, tmp_path / "int8", formats=("paddle",), latency_guard=False
    )
    assert res.quantized_ops == ["matmul_v2:linear_0.w_0", "matmul_v2:linear_2.w_0"]  # enc and head, not the cell
    (key,) = [k for k in res.skipped["paddle"] if k.startswith("while")]
    assert "kept in float" in res.skipped["paddle"][key]
    assert res.agreement["paddle_top1_agreement"] == 1.0
