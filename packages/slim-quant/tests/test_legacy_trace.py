import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from slim_core.model_io import load_inference_model
from slim_quant.legacy_trace import LEGACY_OPS, legacy_ops


class _Functional(paddle.nn.Layer):
    """Every function Paddle 3.3.1 binds to ``_C_ops`` only, called the way PaddleClas code calls them."""

    def __init__(self):
        super().__init__()
        self.fc = paddle.nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        a = paddle.matmul(y, y, transpose_y=True)
        b = paddle.bmm(F.sigmoid(a), y)
        c = paddle.multiply(F.gelu(b), paddle.tanh(y))
        return paddle.sqrt(paddle.exp(c * 0.1) + 1.0)


def _save(model, prefix):
    try:
        with paddle.pir_utils.OldIrGuard():
            paddle.jit.save(model, str(prefix), input_spec=[paddle.static.InputSpec([None, 4, 8], "float32", "x")])
    finally:
        if not paddle.in_dynamic_mode():
            paddle.disable_static()


def test_legacy_ops_traces_functional_forms_and_restores_every_binding(tmp_path):
    paddle.seed(0)
    model = _Functional()
    model.eval()
    x = np.random.default_rng(0).standard_normal((2, 4, 8)).astype("float32")
    ref = model(paddle.to_tensor(x)).numpy()
    with pytest.raises(Exception, match="must be Value"):  # what users hit without it
        _save(model, tmp_path / "plain" / "model")
    before = {name: getattr(paddle, name, None) for name in LEGACY_OPS} | {"F.sigmoid": F.sigmoid, "F.gelu": F.gelu}
    with legacy_ops() as rebound:
        assert {"multiply", "matmul", "bmm", "sigmoid", "gelu", "tanh", "sqrt", "exp"} <= set(rebound)
        np.testing.assert_allclose(model(paddle.to_tensor(x)).numpy(), ref, rtol=1e-6)  # dygraph untouched meanwhile
        _save(model, tmp_path / "legacy" / "model")
    after = {name: getattr(paddle, name, None) for name in LEGACY_OPS} | {"F.sigmoid": F.sigmoid, "F.gelu": F.gelu}
    assert after == before
    loaded = load_inference_model(tmp_path / "legacy" / "model")
    assert loaded.format == "legacy"
    np.testing.assert_allclose(loaded.run({"x": x})[0], ref, rtol=1e-4, atol=1e-5)
