"""The full demo: train a CNN on the bundled digits, auto-compress it, write the report.

The data is slim-core's bundled copy of the UCI digits (no download), upsampled to
16x16 so the network does enough arithmetic per image for compression to show on a
CPU (the 8x8 original is so small that runtime overhead hides any gain). The network
is a plain conv-BN-ReLU CNN, 32-64-128 channels. The recipe prunes half the FLOPs
(channel counts in multiples of 8, which keep oneDNN on its fast kernels), recovers
the accuracy by distillation from the original, and quantizes to INT8 for Paddle
Inference with oneDNN. Latency is timed at batch 64, the batch size the demo states
(a throughput setting: at batch 1 the runtime's fixed overhead dominates this small network).

Example:
    >>> result = run_full_demo("slim-demo-out")   # doctest: +SKIP
    >>> print(result.to_markdown())               # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from slim_auto.engine import AutoCompression, CompressionResult, accuracy_eval
from slim_auto.runstore import MARKER
from slim_core import demo as core_demo
from slim_core import require_paddle
from slim_core.log import get_logger

__all__ = ["run_full_demo", "digits_batches", "demo_digits", "build_demo_cnn", "train_demo_cnn", "DEMO_RECIPE", "DEMO_BATCH", "DEMO_SIZE"]

log = get_logger(__name__)

#: side of the upsampled digit images
DEMO_SIZE = 16
#: the batch size the demo times (and states in its report)
DEMO_BATCH = 64
#: prune half the FLOPs, recover by distillation, quantize to INT8
DEMO_RECIPE: dict[str, Any] = {
    "stages": [
        {"prune": {"flops_ratio": 0.5, "round_to": 8}},
        {"distill": {}},
        {"ptq": {"calibrator": "percentile"}},
    ],
    "train": {"epochs": 2, "learning_rate": 0.001},
    "target": {"max_metric_drop": 0.01},
}


def digits_batches(batch_size: int = 64, seed: int = 0) -> list[tuple]:
    """The 8x8 digits training split as ``(x, y)`` batches."""
    x, y = core_demo.load_digits("train", seed=seed)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]


def demo_digits(split: str = "train", size: int = DEMO_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of the bundled digits, each pixel repeated to ``size x size``."""
    x, y = core_demo.load_digits(split)
    k = size // 8
    return np.ascontiguousarray(np.kron(x, np.ones((1, 1, k, k), "float32"))), y


def build_demo_cnn(width: int = 32, num_classes: int = 10) -> Any:
    """Conv-BN-ReLU blocks (``width``, ``2*width``, ``4*width`` channels, two max-pools), global pooling, linear head."""
    paddle = require_paddle()
    nn = paddle.nn

    def block(cin: int, cout: int) -> Any:
        return nn.Sequential(nn.Conv2D(cin, cout, 3, padding=1, bias_attr=False), nn.BatchNorm2D(cout), nn.ReLU())

    class DemoCNN(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            w = width
            self.features = nn.Sequential(
                block(1, w), block(w, w), nn.MaxPool2D(2), block(w, 2 * w), block(2 * w, 2 * w), nn.MaxPool2D(2), block(2 * w, 4 * w)
            )
            self.pool = nn.AdaptiveAvgPool2D(1)
            self.fc = nn.Linear(4 * w, num_classes)

        def forward(self, x: Any) -> Any:
            return self.fc(paddle.flatten(self.pool(self.features(x)), 1))

    return DemoCNN()


def train_demo_cnn(epochs: int = 4, *, seed: int = 0, batch_size: int = 64, lr: float = 3e-3) -> tuple[Any, float]:
    """Train :func:`build_demo_cnn` on the upsampled digits; return ``(model, test accuracy)``."""
    paddle = require_paddle()
    paddle.seed(seed)
    x, y = demo_digits("train")
    xt, yt = demo_digits("test")
    model = build_demo_cnn()
    opt = paddle.optimizer.Adam(learning_rate=lr, parameters=model.parameters())
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(y))
        for i in range(0, len(y), batch_size):
            idx = order[i : i + batch_size]
            loss = paddle.nn.functional.cross_entropy(model(paddle.to_tensor(x[idx])), paddle.to_tensor(y[idx]))
            loss.backward()
            opt.step()
            opt.clear_grad()
    model.eval()
    return model, core_demo.evaluate(model, xt, yt)


def run_full_demo(
    out_dir: str | Path = "slim-demo-out",
    *,
    epochs: int = 4,
    max_time: float | None = 600.0,
    target: dict | None = None,
    threads: int = 2,
) -> CompressionResult:
    """Train the demo CNN, compress it with :data:`DEMO_RECIPE` to at most one point of accuracy drop, and report.

    Returns:
        The :class:`CompressionResult`; ``out_dir`` holds the model, ``metrics.json``,
        ``report.md`` and ``report.html``.
    """
    t0 = time.monotonic()
    log.info("training the demo CNN on the bundled digits (%dx%d, %d epochs)", DEMO_SIZE, DEMO_SIZE, epochs)
    model, acc = train_demo_cnn(epochs=epochs)
    log.info("trained in %.0f s: test accuracy %.4f", time.monotonic() - t0, acc)
    x, y = demo_digits("train")
    xt, yt = demo_digits("test")
    recipe = dict(DEMO_RECIPE, target=target or DEMO_RECIPE["target"])
    out = Path(out_dir)
    # replace an earlier demo's results, never a directory slim did not create (that one is refused)
    own = not out.exists() or (out / MARKER).is_file() or (out.is_dir() and not any(out.iterdir()))
    ac = AutoCompression(
        model,
        [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(y), 64)],
        accuracy_eval(xt, yt),
        config=recipe,
        example_inputs=xt[:1],
        out_dir=out_dir,
        max_time=max_time,
        batch_sizes=[DEMO_BATCH],
        threads=threads,
        overwrite=own,
        resume=False,
        title=f"slim demo: digits CNN ({DEMO_SIZE}x{DEMO_SIZE}) auto-compression, latency at batch {DEMO_BATCH}, {threads} threads",
    )
    return ac.compress()
