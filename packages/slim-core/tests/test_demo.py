import numpy as np
import pytest

from slim_core import DataError
from slim_core.demo import build_tiny_cnn, evaluate, load_digits


def test_digits_split_is_disjoint_and_complete():
    x, y = load_digits("train")
    xt, yt = load_digits("test")
    xa, _ = load_digits("all")
    assert x.shape[1:] == (1, 8, 8) and x.dtype == np.float32
    assert len(y) + len(yt) == len(xa) == 1797
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_bad_split():
    with pytest.raises(DataError, match="split"):
        load_digits("valid")


def test_untrained_model_is_near_chance():
    x, y = load_digits("test")
    assert evaluate(build_tiny_cnn(), x, y) < 0.5
