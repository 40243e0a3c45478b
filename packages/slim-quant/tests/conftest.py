import os

import numpy as np
import pytest

os.environ.setdefault("SLIM_QUIET", "1")


@pytest.fixture(scope="session")
def digits():
    """A trained digits CNN (a few seconds) and its data: (model, acc, x_train, y_train, x_test, y_test)."""
    from slim_core import demo

    model, acc = demo.train_demo_model(epochs=5)
    x, y = demo.load_digits("train")
    xt, yt = demo.load_digits("test")
    return model, acc, x, y, xt, yt


@pytest.fixture(scope="session")
def calib(digits):
    x = digits[2]
    return [x[i : i + 64] for i in range(0, 384, 64)]


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / (np.linalg.norm(b) or 1.0))
