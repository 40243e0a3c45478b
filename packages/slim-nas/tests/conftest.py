import numpy as np
import paddle
import pytest

from slim_core import demo, set_quiet

set_quiet(True)


@pytest.fixture(scope="session")
def digits():
    """A few batches of the bundled 8x8 digits: (train batches, x_test, y_test)."""
    x, y = demo.load_digits("train")
    xt, yt = demo.load_digits("test")
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    return batches, xt[:128], yt[:128]


@pytest.fixture(autouse=True)
def _seed():
    paddle.seed(0)
    np.random.seed(0)
