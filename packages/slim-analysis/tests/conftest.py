import os

import paddle
import pytest
from _analysis_testing import SmallCNN

os.environ.setdefault("SLIM_QUIET", "1")


@pytest.fixture
def small_cnn():
    paddle.seed(0)
    return SmallCNN()


@pytest.fixture
def saved_small_cnn(tmp_path_factory, small_cnn):
    d = tmp_path_factory.mktemp("m")
    small_cnn.eval()
    paddle.jit.save(small_cnn, str(d / "model"), input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32", "x")])
    return d / "model"
