"""`slim compress` (slim and PaddleSlim ACT recipes), inference-model inputs left byte-identical, and `slim demo`."""

import hashlib
import json
import os

import numpy as np
import pytest

os.environ.setdefault("SLIM_QUIET", "1")

import paddle  # noqa: E402

import slim_auto  # noqa: E402
from slim_auto.demo import digits_batches  # noqa: E402
from slim_core import ConfigError, demo  # noqa: E402
from slim_core.cli import main  # noqa: E402

BUILDER = """
from slim_core import demo

def build():
    model, _ = demo.train_demo_model(epochs=2)
    return model
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    x, y = demo.load_digits("train")
    xt, yt = demo.load_digits("test")
    np.savez(d / "data.npz", x=x, y=y, x_eval=xt, y_eval=yt)
    (d / "builder.py").write_text(BUILDER)
    model, _ = demo.train_demo_model(epochs=2)
    spec = [paddle.static.InputSpec([None, 1, 8, 8], "float32", "x")]
    paddle.jit.save(model, str(d / "pir" / "model"), input_spec=spec)
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(model, str(d / "legacy" / "model"), input_spec=spec)
    return d


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_compress_slim_recipe_from_the_command_line(workdir, capsys):
    recipe = workdir / "recipe.yaml"
    recipe.write_text("stages:\n  - prune: {ratio: 0.25}\n  - distill: {}\ntrain: {epochs: 1}\ntarget: {max_metric_drop: 0.05}\n")
    out = workdir / "out-recipe"
    code = main(
        ["compress", str(recipe), "--model", f"{workdir / 'builder.py'}:build", "--data", str(workdir / "data.npz"), "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert code in (0, 1)  # 1 only when the target is missed, which the report then says
    assert "| metric |" in printed and f"saved to {out}" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["name"] for c in metrics["candidates"]] == ["baseline", "prune", "prune > distill"]
    assert code == (0 if metrics["target_met"] else 1)
    assert (out / "model" / "slim.json").is_file() and (out / "report.html").is_file()


def test_compress_act_recipe_from_the_command_line(workdir, capsys):
    act = workdir / "act.yaml"
    act.write_text(
        "Global:\n  model_dir: ./nowhere\n  batch_size: 32\n"
        "ChannelPrune:\n  pruned_ratio: 0.25\n  criterion: l1_norm\n  prune_params_name: [conv2d_0.w_0]\n"
        "Distillation:\n  alpha: 1.0\n  loss: soft_label\n"
        "TrainConfig:\n  epochs: 1\n  learning_rate: 0.002\n  optimizer_builder:\n    optimizer: {type: Adam}\n  target_metric: 0.5\n"
    )
    out = workdir / "out-act"
    code = main(
        ["compress", str(act), "--model", f"{workdir / 'builder.py'}:build", "--data", str(workdir / "data.npz"), "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert "ChannelPrune.pruned_ratio -> prune.ratio = 0.25" in printed and "ChannelPrune.prune_params_name" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["name"] for c in metrics["candidates"]] == ["baseline", "ChannelPrune", "ChannelPrune > distill"]
    assert metrics["target"]["min_metric"] == 0.5 and code == (0 if metrics["target_met"] else 1)
    assert "act_translation" in metrics and "PaddleSlim ACT recipe translation" in (out / "report.md").read_text()


def test_compress_errors_are_clear(workdir, capsys):
    bad = workdir / "bad.yaml"
    bad.write_text("stages:\n  - ptq: {calibrator: kl}\n  - prune: {flops_ration: 0.3}\n")
    code = main(
        [
            "compress",
            str(bad),
            "--model",
            f"{workdir / 'builder.py'}:build",
            "--data",
            str(workdir / "data.npz"),
            "--out",
            str(workdir / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "line 3" in err and "flops_ration" in err and "flops_ratio" in err
    code = main(["compress", str(bad), "--data", str(workdir / "data.npz")])
    assert code == 2 and "no model" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["pir", "legacy"])
def test_inference_model_inputs_stay_byte_identical(fmt, workdir):
    folder = workdir / fmt
    before = _digests(folder)
    xt, yt = demo.load_digits("test")
    out = workdir / f"out-{fmt}"
    result = slim_auto.AutoCompression(
        str(folder / "model"),
        digits_batches(),
        slim_auto.accuracy_eval(xt, yt),
        config={"stages": [{"ptq": {"calibrator": "avg"}}]},
        out_dir=out,
        backends=["paddle", "onnxruntime"],  # a PIR program gets INT8 through ONNX Runtime
    ).compress()
    assert _digests(folder) == before
    assert result.baseline.metric > 0.8 and result.baseline.latency_ms["paddle"]["1"] > 0
    # each allowed runtime is a route
    assert [c.name for c in result.candidates] == ["baseline", "ptq [paddle]", "ptq [onnxruntime]"]
    assert result.candidates[2].status == "ok" and result.candidates[2].latency_ms["onnxruntime"]["1"] > 0
    if fmt == "legacy":
        assert result.candidates[1].status == "ok"
    assert (out / "model").is_dir() and (out / "report.md").is_file()


def test_inference_model_rejects_training_stages(workdir):
    xt, yt = demo.load_digits("test")
    with pytest.raises(ConfigError, match="needs a dygraph Layer"):
        slim_auto.AutoCompression(
            str(workdir / "pir" / "model"),
            digits_batches(),
            slim_auto.accuracy_eval(xt, yt),
            config={"stages": [{"prune": {"ratio": 0.2}}]},
            out_dir=workdir / "x",
        )


def test_slim_demo_runs_the_full_flow(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["demo", "--epochs", "1", "--max-time", "60"])  # the default relative --out
    printed = capsys.readouterr().out
    out = tmp_path / "slim-demo-out"
    assert code == 0 and "| metric |" in printed and "latency paddle batch 64" in printed
    for name in ("report.md", "report.html", "metrics.json", "model/slim.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["candidates"][0]["name"] == "baseline" and len(metrics["candidates"]) >= 2
