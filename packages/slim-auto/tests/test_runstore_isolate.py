"""The run store (ownership marker, lock, pickle-free checkpoints) and the child-process runner."""

import json

import numpy as np
import paddle
import pytest

from slim_auto.isolate import IsolatedError, run_isolated
from slim_auto.runstore import LOCK, MARKER, RunStore
from slim_core import OutputExistsError


def test_a_foreign_non_empty_directory_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(OutputExistsError, match="not created by slim"):
        RunStore(tmp_path).check(0)
    assert (tmp_path / "mine.txt").read_text() == "user data"
    RunStore(tmp_path, overwrite=True).check(0)  # the explicit opt-in


def test_an_empty_or_new_directory_becomes_slims_and_relative_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = RunStore("out")
    assert store.out_dir == tmp_path / "out"
    store.check(0)
    assert store.open("fp") is None
    store.unlock()
    assert json.loads((tmp_path / "out" / MARKER).read_text())["created_by"] == "slim-auto"
    (tmp_path / "out" / "metrics.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="finished run"):  # slim's, but holding results: still needs overwrite
        RunStore("out").check(0)


def test_a_second_run_on_the_same_directory_fails_clearly(tmp_path):
    first = RunStore(tmp_path / "out")
    first.check(0)
    first.open("fp")
    try:
        with pytest.raises(OutputExistsError, match="another slim run is writing"):
            RunStore(tmp_path / "out").check(0)
    finally:
        first.unlock()
    assert (tmp_path / "out" / LOCK).exists()
    RunStore(tmp_path / "out", resume=True).check(0)  # free again once the first run ended


def test_weights_round_trip_through_npz_without_pickle(tmp_path):
    store = RunStore(tmp_path / "out")
    store.check(0)
    store.open("fp")
    layer = paddle.nn.Linear(3, 2)
    store.save_weights(layer, 0, 0)
    path = tmp_path / "out" / "checkpoints" / "p0-s0.npz"
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(layer.state_dict())
    other = paddle.nn.Linear(3, 2)
    store.load_weights(other, 0, 0)
    np.testing.assert_array_equal(other.weight.numpy(), layer.weight.numpy())
    store.unlock()


def test_a_native_crash_in_the_child_is_an_error_not_the_end_of_this_process():
    with pytest.raises(IsolatedError, match="crashed \\(SIGABRT\\)"):
        run_isolated("os:abort", {}, timeout=60)
    assert run_isolated("os.path:join", {"a": "x"}, timeout=60) == "x"
    with pytest.raises(IsolatedError, match="TypeError"):
        run_isolated("os.path:join", {"nope": 1}, timeout=60)


def test_routes_cover_the_runtimes_and_unknown_names_fail():
    from slim_auto.routes import ROUTES, routes_for
    from slim_core import ConfigError

    assert {"paddle", "onnxruntime", "openvino"} <= set(ROUTES)
    assert [r.name for r in routes_for(["onnxruntime", "paddle"])] == ["onnxruntime", "paddle"]
    with pytest.raises(ConfigError, match="unknown runtime 'tensorrt'"):
        routes_for(["tensorrt"])


def test_each_runtime_is_benchmarked_by_its_own_name_and_never_converts_a_paddle_int8_program():
    from types import SimpleNamespace

    from slim_auto.measure import _bench_format

    legacy = {"paddle-legacy": SimpleNamespace(runtime="paddle")}
    onnx = {"onnx": SimpleNamespace(runtime="onnxruntime")}
    fp32, int8 = SimpleNamespace(int8=False), SimpleNamespace(int8=True)
    assert _bench_format(legacy, fp32, "paddle") == "paddle-legacy"
    assert _bench_format(onnx, int8, "onnxruntime") == "onnx/onnxruntime"
    assert _bench_format(onnx, int8, "openvino") == "onnx/openvino"
    assert _bench_format(legacy, fp32, "openvino") == "onnx/openvino"  # FP32: converted to ONNX for OpenVINO
    # paddle2onnx aborts the process on a Paddle INT8 program: no runtime may ask for that conversion
    assert _bench_format(legacy, int8, "openvino") is None and _bench_format(legacy, int8, "onnxruntime") is None


def test_side_by_side_timing_covers_every_model_on_every_runtime_in_one_round_robin(tmp_path):
    pytest.importorskip("onnxruntime")
    import numpy as np
    import paddle

    from slim_auto.measure import time_side_by_side
    from slim_deploy.export import export

    paddle.seed(0)
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.ReLU(), paddle.nn.Flatten(), paddle.nn.Linear(4 * 6 * 6, 2))
    net.eval()
    export(net, str(tmp_path / "m"), input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32", "x")], format="paddle")
    x = [np.zeros((1, 3, 8, 8), "float32")]
    models = {0: (tmp_path / "m", ["paddle", "onnxruntime"]), 1: (tmp_path / "m", ["onnxruntime"]), 2: (tmp_path / "missing", ["paddle"])}
    lat = time_side_by_side(models, x, [1, 2], 1, budget_s=0.01, min_rounds=3, warm_s=0.01, block=2)
    assert set(lat[0]) == {"paddle", "onnxruntime"} and set(lat[1]) == {"onnxruntime"} and lat[2] == {}
    assert all(set(per) == {"1", "2"} and all(v > 0 for v in per.values()) for m in (0, 1) for per in lat[m].values())
