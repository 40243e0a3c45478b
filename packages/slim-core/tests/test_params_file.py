import numpy as np
import paddle
import pytest

from slim_core import ModelLoadError
from slim_core.params_file import read_params_file


class Mixed(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.fc = paddle.nn.Linear(4, 3)
        self.q = self.create_parameter([5, 2], dtype="int8", default_initializer=paddle.nn.initializer.Constant(1))

    def forward(self, x):
        return self.fc(x) + paddle.cast(self.q, "float32").sum()


@pytest.fixture(scope="module")
def params_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("pf")
    layer = Mixed()
    layer.eval()
    paddle.jit.save(layer, str(root / "m"), input_spec=[paddle.static.InputSpec([None, 4], "float32", "x")])
    return root / "m.pdiparams"


def test_lists_dtypes_and_shapes(params_path):
    recs = read_params_file(params_path, expected_count=3)
    got = sorted((r.dtype, r.shape) for r in recs)
    assert got == [("float32", (3,)), ("float32", (4, 3)), ("int8", (5, 2))]
    assert sum(r.nbytes for r in recs) == 3 * 4 + 12 * 4 + 10


def test_truncated_file_named(params_path, tmp_path):
    data = params_path.read_bytes()
    bad = tmp_path / "bad.pdiparams"
    bad.write_bytes(data[:-3])
    with pytest.raises(ModelLoadError, match=r"bad\.pdiparams is corrupt or truncated"):
        read_params_file(bad)


def test_trailing_garbage_is_corrupt(params_path, tmp_path):
    bad = tmp_path / "bad.pdiparams"
    bad.write_bytes(params_path.read_bytes() + np.arange(7, dtype="uint8").tobytes())
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        read_params_file(bad)


def test_count_mismatch(params_path):
    with pytest.raises(ModelLoadError, match="holds 3 tensors but the model needs 4"):
        read_params_file(params_path, expected_count=4)
