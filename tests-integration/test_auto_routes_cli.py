"""slim-auto on real Paddle: relative --out, a native crash in one runtime route, two-trial selection,
--eval / --allow-code from the command line, log lines instead of oneDNN noise."""

import json
import os
from dataclasses import dataclass

import numpy as np
import paddle
import pytest

os.environ.setdefault("SLIM_QUIET", "1")

import slim_auto  # noqa: E402
from slim_auto.demo import digits_batches  # noqa: E402
from slim_auto.routes import ROUTES, Route, register_route  # noqa: E402
from slim_auto.stages import STAGES, Applied, ApplyStage, register_apply  # noqa: E402
from slim_core import SlimConfig, demo  # noqa: E402
from slim_core.cli import main  # noqa: E402
from slim_deploy.predictor import Predictor  # noqa: E402

BUILDER = """
from slim_core import demo

def build():
    model, _ = demo.train_demo_model(epochs=2)
    return model
"""

METRIC = """
import numpy as np
from slim_core import demo

def top1(predict):
    x, y = demo.load_digits("test")
    out = np.asarray(predict(x))
    return float((out.argmax(-1) == y).mean())
"""

CRASHY = """
import os

def convert(**kwargs):
    os.abort()  # what paddle2onnx does on a Paddle INT8 program
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("routes")
    x, y = demo.load_digits("train")
    xt, yt = demo.load_digits("test")
    np.savez(d / "data.npz", x=x, y=y, x_eval=xt, y_eval=yt)
    (d / "builder.py").write_text(BUILDER)
    (d / "digits_metric.py").write_text(METRIC)
    (d / "crashy_route.py").write_text(CRASHY)
    model, _ = demo.train_demo_model(epochs=3)
    spec = [paddle.static.InputSpec([None, 1, 8, 8], "float32", "x")]
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(model, str(d / "legacy" / "model"), input_spec=spec)
    paddle.jit.save(model, str(d / "pir" / "model"), input_spec=spec)
    return d


def test_relative_out_eval_and_allow_code_from_the_command_line(workdir, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(workdir))
    (tmp_path / "recipe.yaml").write_text(
        f"model: {workdir / 'builder.py'}:build\ndata: {workdir / 'data.npz'}\n"
        "stages:\n  - prune: {ratio: 0.25}\n  - ptq: {calibrator: avg}\ntarget: {max_metric_drop: 0.5}\n"
    )
    code = main(["compress", "recipe.yaml"])  # the recipe names code: refused without --allow-code
    assert code == 2 and "--allow-code" in capfd.readouterr().err
    code = main(["compress", "recipe.yaml", "--eval", "nosuch_metrics:top1"])
    err = capfd.readouterr().err
    assert code == 2 and "cannot import 'nosuch_metrics'" in err
    code = main(["compress", "recipe.yaml", "--allow-code", "--eval", "digits_metric:top1"])  # default relative --out
    out, err = capfd.readouterr()
    result = tmp_path / "slim-compress-out"
    metrics = json.loads((result / "metrics.json").read_text())
    assert code == (0 if metrics["target_met"] else 1), out + err  # met or not depends on timings under load
    assert [(c["name"], c["status"]) for c in metrics["candidates"]] == [("baseline", "ok"), ("prune", "ok"), ("prune > ptq", "ok")]
    assert metrics["baseline"]["metric"] > 0.8  # the --eval function's top-1 on the digits test split
    assert (result / ".slim-auto.json").is_file() and (result / "checkpoints" / "p0-s0.npz").is_file()
    assert not list((result / "checkpoints").glob("*.pdparams"))
    assert "[slim] stage prune > ptq started" in err and "[slim] candidate #2 prune > ptq: metric" in err
    assert not [ln for ln in out.splitlines() if ln.startswith("---")] and "quantized" not in out  # oneDNN's report: debug log
    assert "slim-compress-out" in out


def _ptq_on(workdir, backends, out_dir):
    """PTQ of the legacy digits model on each runtime route in ``backends``."""
    xt, yt = demo.load_digits("test")
    return slim_auto.AutoCompression(
        str(workdir / "legacy" / "model"),
        digits_batches(),
        slim_auto.accuracy_eval(xt, yt),
        config={"stages": [{"ptq": {"calibrator": "avg"}}]},
        target={"max_metric_drop": 0.5},
        backends=backends,
        out_dir=out_dir,
    ).compress()


def test_a_native_crash_in_one_route_is_a_failed_candidate_and_the_next_route_runs(workdir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(workdir))
    register_route(Route("crashy", format="paddle", backend="paddle", bench="paddle", converter="crashy_route:convert"))
    try:
        result = _ptq_on(workdir, ["crashy", "paddle"], tmp_path / "out")
    finally:
        ROUTES.pop("crashy")
    rows = [(c.name, c.status) for c in result.candidates]
    assert rows == [("baseline", "ok"), ("ptq [crashy]", "failed"), ("ptq [paddle]", "ok")]
    assert "crashed (SIGABRT)" in result.candidates[1].error
    paddle_route = result.candidates[2]
    assert paddle_route.runtime == "paddle" and paddle_route.metric > 0.8 and paddle_route.latency_ms["paddle"]["1"] > 0
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "SIGABRT" in report["candidates"][1]["error"]


@dataclass(frozen=True)
class DampConfig(SlimConfig):
    """Scale the last layer's weights: 1.0 keeps the model, 0.0 ruins it."""

    scale: float = 1.0


@register_apply(DampConfig)
def _damp(state, cfg, ctx):
    last = [m for m in state.layer.sublayers() if isinstance(m, paddle.nn.Linear)][-1]
    last.weight.set_value(last.weight.numpy() * cfg.scale)
    last.bias.set_value(last.bias.numpy() * cfg.scale)
    return Applied(model=state.layer, applied={"stage": "damp", "scale": cfg.scale})


def test_the_kept_candidate_is_the_trial_whose_metric_was_measured(tmp_path):
    STAGES.register("damp", overwrite=True)(type("DampStage", (ApplyStage,), {"kind": "damp", "config_cls": DampConfig}))
    model, _ = demo.train_demo_model(epochs=3)
    xt, yt = demo.load_digits("test")
    eval_fn = slim_auto.accuracy_eval(xt, yt)
    result = slim_auto.AutoCompression(
        model,
        digits_batches(),
        eval_fn,
        config={"stages": [{"damp": {}, "search": {"scale": [1.0, 0.0]}}]},  # the good trial first, the ruined one last
        example_inputs=xt[:1],
        target={"max_metric_drop": 0.5, "min_speedup": 0.01},  # a speed part: the search does not stop at the first good trial
        out_dir=tmp_path / "out",
    ).compress()
    cand = result.candidates[1]
    good, bad = cand.trials
    assert good["metric"] > 0.8 and bad["metric"] < 0.3
    assert cand.settings == {"scale": 1.0} and cand.metric == good["metric"]
    delivered = eval_fn(Predictor(str(tmp_path / "out" / cand.model_dir)))
    assert abs(delivered - good["metric"]) < 0.02  # the files of the candidate are the good trial's


def test_ptq_with_max_metric_drop_on_an_inference_model_gets_the_engines_eval_fn(workdir, tmp_path):
    xt, yt = demo.load_digits("test")
    result = slim_auto.AutoCompression(
        str(workdir / "legacy" / "model"),
        digits_batches(),
        slim_auto.accuracy_eval(xt, yt),
        config={"stages": [{"ptq": {"calibrator": "avg", "max_metric_drop": 0.001}, "name": "ptq-skip"}]},
        target={"max_metric_drop": 0.5},
        backends=["paddle"],
        out_dir=tmp_path / "out",
    ).compress()
    cand = result.candidates[1]
    assert cand.name == "ptq-skip [paddle]" and cand.status == "ok", cand.error  # was "max_metric_drop needs eval_fn"
    assert result.baseline.metric - cand.metric <= 0.001 + 1e-9 or any("Kept in float" in n for n in cand.notes)


def _compress_paddle_route(workdir, tmp_path, model, target):
    """`slim compress` of ``workdir / model`` with an avg-calibrated PTQ recipe and ``target`` (YAML), paddle route only."""
    (tmp_path / "recipe.yaml").write_text(f"stages:\n  - ptq: {{calibrator: avg}}\ntarget: {target}\n")
    model, data = workdir / model, workdir / "data.npz"
    return main(["compress", str(tmp_path / "recipe.yaml"), "--model", str(model), "--data", str(data),
                 "--backends", "paddle", "--out", str(tmp_path / "out")])  # fmt: skip


def test_a_missed_target_prints_each_failed_candidate_in_one_line(workdir, tmp_path, capfd):
    # Paddle INT8 needs a legacy program: the paddle route fails on a PIR model
    code = _compress_paddle_route(workdir, tmp_path, "pir/model.json", "{max_metric_drop: 0.01}")
    out = capfd.readouterr().out
    assert code == 1 and "NOT met" in out
    lines = out.splitlines()
    failed = lines[lines.index("failed candidates:") + 1]
    assert failed.startswith("  #1 ptq [paddle]: ExportError:") and "legacy" in failed


def test_a_candidate_that_misses_the_target_says_why(workdir, tmp_path, capfd):
    # one route measured but worse than the target (here: an unreachable speedup) is a worse candidate, and the
    # terminal says why in one line, as it does for failed ones
    code = _compress_paddle_route(workdir, tmp_path, "legacy/model.pdmodel", "{min_speedup: 1000}")
    out, err = capfd.readouterr()
    assert code == 1 and "NOT met" in out
    lines = out.splitlines()
    missed = lines[lines.index("candidates that missed the target:") + 1]
    assert missed.startswith("  #1 ptq [paddle]: speedup") and "< 1000x" in missed
    assert "misses the target: speedup" in out + err  # the candidate's log line


def test_the_openvino_route_quantizes_evaluates_and_times_on_openvino(workdir, tmp_path):
    from slim_core.runtime import runtime_available

    if not (runtime_available("openvino") and runtime_available("onnxruntime")):
        pytest.skip("openvino and onnxruntime are needed (pip install 'slim-deploy[onnx,openvino]')")
    result = _ptq_on(workdir, ["openvino", "onnxruntime"], tmp_path / "out")
    rows = [(c.name, c.status, c.runtime) for c in result.candidates]
    assert rows[1:] == [("ptq [openvino]", "ok", "openvino"), ("ptq [onnxruntime]", "ok", "onnxruntime")], result.candidates[1].error
    ov, ort = result.candidates[1], result.candidates[2]
    assert ov.metric > 0.8 and abs(ov.metric - ort.metric) < 0.03  # the same QDQ file on two runtimes
    # each candidate timed on its own runtime; the FP32 baseline on every allowed runtime, each by its name
    assert set(ov.latency_ms) == {"openvino"} and set(ort.latency_ms) == {"onnxruntime"}
    assert {"openvino", "onnxruntime"} <= set(result.baseline.latency_ms)
    assert all(v > 0 for per in result.baseline.latency_ms.values() for v in per.values())
    manifest = json.loads((tmp_path / "out" / ov.model_dir / "slim.json").read_text())
    assert manifest["verification"]["runtimes"]["openvino"]["int8_layers"] > 0  # what OpenVINO ran in INT8
    layout = manifest["compression"]["quantization"]["export"]["onnx"]["target_runtime"]
    assert layout == "openvino"  # the OpenVINO route's QDQ is laid out for OpenVINO
    ort_manifest = json.loads((tmp_path / "out" / ort.model_dir / "slim.json").read_text())
    assert ort_manifest["compression"]["quantization"]["export"]["onnx"]["target_runtime"] == "onnxruntime"
