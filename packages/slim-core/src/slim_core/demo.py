"""The built-in demo task: handwritten digits and a tiny CNN, offline and in seconds.

The data is scikit-learn's bundled copy of the UCI optical digits set (1797
images of 8x8 pixels, values 0-16), shipped inside slim-core as
``demo_data/digits.npz`` so the demo and tests need no download and no
scikit-learn.

Example:
    >>> from slim_core import demo
    >>> model, acc = demo.train_demo_model(epochs=2)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from slim_core._paddle import require_paddle
from slim_core.atomic import atomic_dir
from slim_core.errors import DataError

__all__ = ["load_digits", "build_tiny_cnn", "train_demo_model", "evaluate", "run_demo", "DemoResult"]


def load_digits(split: str = "train", *, seed: int = 0, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)``: float32 ``[N, 1, 8, 8]`` scaled to [0, 1] and int64 labels.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``; the split is fixed by ``seed``.
    """
    if split not in ("train", "test", "all"):
        raise DataError(f"split={split!r} is not one of 'train', 'test', 'all'")
    with resources.files("slim_core").joinpath("demo_data/digits.npz").open("rb") as fh:
        data = np.load(fh)
        images, labels = data["images"], data["labels"]
    x = (images.astype("float32") / 16.0)[:, None, :, :]
    y = labels.astype("int64")
    if split == "all":
        return x, y
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    idx = order[:n_test] if split == "test" else order[n_test:]
    return x[idx], y[idx]


def build_tiny_cnn(num_classes: int = 10, width: int = 16) -> Any:
    """A small conv-BN-ReLU network for 1x8x8 inputs (about 40k parameters at width 16)."""
    paddle = require_paddle()
    nn = paddle.nn

    class TinyCNN(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2D(1, width, 3, padding=1)
            self.bn1 = nn.BatchNorm2D(width)
            self.conv2 = nn.Conv2D(width, 2 * width, 3, padding=1)
            self.bn2 = nn.BatchNorm2D(2 * width)
            self.pool = nn.MaxPool2D(2)
            self.fc1 = nn.Linear(2 * width * 16, 64)
            self.fc2 = nn.Linear(64, num_classes)
            self.relu = nn.ReLU()

        def forward(self, x: Any) -> Any:
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.pool(self.relu(self.bn2(self.conv2(x))))
            x = paddle.flatten(x, 1)
            return self.fc2(self.relu(self.fc1(x)))

    return TinyCNN()


def evaluate(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of a dygraph model (eval mode is set and restored)."""
    paddle = require_paddle()
    was_training = model.training
    model.eval()
    correct = 0
    with paddle.no_grad():
        for i in range(0, len(y), batch_size):
            logits = model(paddle.to_tensor(x[i : i + batch_size]))
            correct += int((logits.numpy().argmax(-1) == y[i : i + batch_size]).sum())
    if was_training:
        model.train()
    return correct / max(len(y), 1)


def train_demo_model(epochs: int = 8, *, seed: int = 0, batch_size: int = 64, lr: float = 3e-3, width: int = 16) -> tuple[Any, float]:
    """Train the tiny CNN on the digits train split; return ``(model, test_accuracy)``."""
    paddle = require_paddle()
    paddle.seed(seed)
    np.random.seed(seed)
    x, y = load_digits("train", seed=seed)
    xt, yt = load_digits("test", seed=seed)
    model = build_tiny_cnn(width=width)
    opt = paddle.optimizer.Adam(learning_rate=lr, parameters=model.parameters())
    loss_fn = paddle.nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for i in range(0, len(y), batch_size):
            idx = order[i : i + batch_size]
            loss = loss_fn(model(paddle.to_tensor(x[idx])), paddle.to_tensor(y[idx]))
            loss.backward()
            opt.step()
            opt.clear_grad()
    model.eval()
    return model, evaluate(model, xt, yt)


@dataclass
class DemoResult:
    """What the demo measured."""

    accuracy: float
    params: int
    flops: int
    size_bytes: int
    train_seconds: float
    model_path: str

    def to_markdown(self) -> str:
        return (
            "| metric | value |\n|---|---|\n"
            f"| test accuracy (digits) | {self.accuracy * 100:.2f}% |\n"
            f"| parameters | {self.params:,} |\n"
            f"| FLOPs (2 x MACs, 1x1x8x8 input) | {self.flops:,} |\n"
            f"| size on disk | {self.size_bytes / 1024:.1f} KiB |\n"
            f"| training time | {self.train_seconds:.1f} s |\n"
            f"| inference model | {self.model_path} |\n"
        )


def _flops(model: Any) -> int:
    """2 x multiply-accumulates of conv and linear layers for one 1x1x8x8 input."""
    paddle = require_paddle()
    total = 0
    hooks = []

    def hook(layer: Any, inputs: Any, output: Any) -> None:
        nonlocal total
        w = layer.weight
        if isinstance(layer, paddle.nn.Conv2D):
            total += 2 * int(np.prod(output.shape[1:])) * int(np.prod(w.shape[1:]))
        else:
            total += 2 * int(w.shape[0]) * int(w.shape[1])

    for layer in model.sublayers():
        if isinstance(layer, (paddle.nn.Conv2D, paddle.nn.Linear)):
            hooks.append(layer.register_forward_post_hook(hook))
    with paddle.no_grad():
        model(paddle.zeros([1, 1, 8, 8]))
    for h in hooks:
        h.remove()
    return total


def run_demo(out_dir: str | Path = "slim-demo-out", *, epochs: int = 8, overwrite: bool = True) -> DemoResult:
    """Train the demo model, measure it and save it as an inference model under ``out_dir``."""
    paddle = require_paddle()
    t0 = time.perf_counter()
    model, acc = train_demo_model(epochs=epochs)
    seconds = time.perf_counter() - t0
    params = int(sum(int(np.prod(p.shape)) for p in model.parameters()))
    flops = _flops(model)
    out = Path(out_dir)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        spec = [paddle.static.InputSpec([None, 1, 8, 8], "float32", "x")]
        paddle.jit.save(model, str(tmp / "model"), input_spec=spec)
        size = sum(f.stat().st_size for f in tmp.iterdir() if f.name.startswith("model."))
        result = DemoResult(acc, params, flops, size, seconds, str(out / "model"))
        (tmp / "metrics.json").write_text(json.dumps(result.__dict__, indent=2))
    return result
