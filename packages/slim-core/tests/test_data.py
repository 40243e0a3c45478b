import numpy as np
import paddle
import pytest

from slim_core import Batches, DataError


def test_list_of_arrays():
    data = [np.ones((2, 3), "float32"), np.zeros((4, 3), "float32")]
    shapes = [b["x"].shape for b in Batches(data)]
    assert shapes == [(2, 3), (4, 3)]


def test_dataloader_with_labels_drops_labels():
    ds = paddle.io.TensorDataset([paddle.rand([10, 3]), paddle.arange(10)])
    loader = paddle.io.DataLoader(ds, batch_size=4)
    batches = Batches(loader, ["x"])
    got = list(batches.with_rest())
    assert [b["x"].shape for b, _ in got] == [(4, 3), (4, 3), (2, 3)]
    assert got[0][1][0].shape == [4]
    # DataLoader is re-iterable
    assert len(list(batches)) == 3


def test_generator_once_then_materialize():
    gen = (np.ones((1, 2), "float32") for _ in range(3))
    b = Batches(gen)
    m = b.materialize()
    assert len(list(m)) == 3 and len(list(m)) == 3
    with pytest.raises(DataError, match="already consumed"):
        list(b)


def test_dicts_and_multi_input():
    data = [{"a": np.ones((1, 2), "float32"), "b": np.ones((1, 4), "float32")}]
    out = list(Batches(data, ["a", "b"]))
    assert set(out[0]) == {"a", "b"}
    tup = [(np.ones((1, 2), "float32"), np.ones((1, 4), "float32"), np.array([1]))]
    out2 = list(Batches(tup, ["a", "b"]).with_rest())
    assert out2[0][1][0].tolist() == [1]


def test_limit():
    data = [np.ones((1, 2), "float32")] * 10
    assert len(list(Batches(data, limit=3))) == 3


def test_empty_data():
    with pytest.raises(DataError, match="empty"):
        list(Batches([]))


def test_none_data():
    with pytest.raises(DataError, match="no data"):
        Batches(None)


def test_nan_and_inf_named():
    bad = np.ones((2, 3), "float32")
    bad[0, 0] = np.nan
    bad[1, 1] = np.inf
    with pytest.raises(DataError, match=r"input 'x' in batch 1 holds 1 NaN and 1 inf"):
        list(Batches([np.ones((2, 3), "float32"), bad]))


def test_wrong_shape_says_expected():
    with pytest.raises(DataError, match=r"shape \[2, 4\] but the model expects \['\?', 3\]"):
        list(Batches([np.ones((2, 4), "float32")], ["x"], shapes=[[None, 3]]))


def test_wrong_dtype():
    with pytest.raises(DataError, match="expects float32"):
        list(Batches([np.ones((2, 3), "int64")], ["x"], dtypes=["float32"]))


def test_missing_dict_key():
    with pytest.raises(DataError, match="no input 'b'"):
        list(Batches([{"a": np.ones(2)}], ["a", "b"]))


def test_too_few_items_for_inputs():
    with pytest.raises(DataError, match="takes 2 inputs"):
        list(Batches([np.ones((1, 2), "float32")], ["a", "b"]))


def test_data_errors_name_the_input_and_pass_other_errors_through():
    from slim_core import ConfigError, data_errors
    from slim_core.demo import build_tiny_cnn

    model = build_tiny_cnn(width=4)
    model.eval()
    bad = np.zeros((2, 3, 8, 8), "float32")
    with pytest.raises(
        DataError, match=r"TinyCNN cannot run on input 'img' \(shape \[2, 3, 8, 8\], float32\) in batch 0: expected shape \[N, 1"
    ):
        with data_errors(model, [bad], names=["img"], where="batch 0"):
            model(paddle.to_tensor(bad))
    with pytest.raises(ZeroDivisionError):  # not about the data: unchanged
        with data_errors(model, [bad]):
            raise ZeroDivisionError("bug in user code")
    with pytest.raises(ConfigError):  # slim's own errors pass through
        with data_errors(model, [bad]):
            raise ConfigError("x")
