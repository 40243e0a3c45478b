"""A run interrupted mid-stage says so in its report, keeps its checkpoints and resumes."""

import json

import numpy as np
import paddle
import pytest

import slim_auto
from slim_auto.runstore import LOCK


class _SE(paddle.nn.Layer):
    def __init__(self, c):
        super().__init__()
        self.fc = paddle.nn.Conv2D(c, c, 1)

    def forward(self, x):
        return paddle.multiply(x, paddle.nn.functional.sigmoid(self.fc(x.mean(axis=[2, 3], keepdim=True))))


def _net():
    paddle.seed(0)
    return paddle.nn.Sequential(
        paddle.nn.Conv2D(3, 8, 3, padding=1),
        paddle.nn.ReLU(),
        _SE(8),
        paddle.nn.AdaptiveAvgPool2D(1),
        paddle.nn.Flatten(),
        paddle.nn.Linear(8, 2),
    )


def test_an_interrupted_run_reports_it_and_resumes(tmp_path):
    x = np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype("float32")
    calls = []

    def metric(predict):
        calls.append(1)
        if len(calls) == 2:  # the pruned candidate: the user presses Ctrl-C while it is evaluated
            raise KeyboardInterrupt
        return float(np.asarray(predict(x)).mean())

    def run():
        return slim_auto.AutoCompression(
            _net(), [x], metric, config={"stages": [{"prune": {"ratio": 0.25}}]}, example_inputs=x[:1], out_dir=tmp_path / "out",
            batch_sizes=[1],
        ).compress()  # fmt: skip

    with pytest.raises(KeyboardInterrupt):
        run()
    out = tmp_path / "out"
    assert json.loads((out / "metrics.json").read_text())["stopped"] == "interrupted"
    assert "Stopped: interrupted." in (out / "report.md").read_text()
    assert (out / "checkpoints" / "state.json").is_file() and (out / "model").is_dir()  # the baseline, complete
    assert (out / LOCK).exists()
    result = run()  # the same run again resumes (the lock was released) and finishes
    assert result.stopped == "done" and [c.name for c in result.candidates] == ["baseline", "prune"]
    assert json.loads((out / "metrics.json").read_text())["stopped"] == "done"
