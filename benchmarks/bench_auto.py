"""slim-auto benchmark: recipe-less compression to "at most 0.5 point accuracy drop".

Models:
  * a small CNN trained on Fashion-MNIST (1x28x28);
  * a ResNet18 (paddle.vision.models.resnet18, 10 classes) trained briefly on
    Fashion-MNIST resized to 3x32x32.

For each: accuracy before/after (on test images, measured on the exported model by
Paddle Inference), achieved drop, measured latency on Paddle Inference (batch 1 and
16, 2 threads) and speedup, size on disk, which candidate won, and the wall time of
the compression itself. Everything is measured in one run; on a machine loaded by
other processes the absolute timings are slower, the ratios still hold.

Data: Fashion-MNIST from /usr/share/datasets/fashion-mnist (Debian package
``dataset-fashion-mnist``); without it the bundled digits of slim_core.demo
(8x8, so the ResNet part is skipped).

Run: ``python benchmarks/bench_auto.py`` (or ``nox -s bench -- benchmarks/bench_auto.py``).
Environment: ``BENCH_AUTO_TRAIN`` (training images, default 12000), ``BENCH_AUTO_TEST`` (test images, default 2000),
``BENCH_AUTO_MAX_TIME`` (seconds per compression, default 900),
``BENCH_AUTO_PARTS`` (``cnn,resnet18`` by default; name one to run only that part).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("SLIM_QUIET", "1")

import paddle  # noqa: E402
from _fashion import fashion_or_digits  # noqa: E402

import slim_auto  # noqa: E402
from slim_core import demo  # noqa: E402

N_TRAIN = int(os.environ.get("BENCH_AUTO_TRAIN", "12000"))
N_TEST = int(os.environ.get("BENCH_AUTO_TEST", "2000"))
MAX_TIME = float(os.environ.get("BENCH_AUTO_MAX_TIME", "900"))
PARTS = os.environ.get("BENCH_AUTO_PARTS", "cnn,resnet18").split(",")


def load_data() -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    name, x, y, xt, yt = fashion_or_digits("bench_auto")
    if name == "Fashion-MNIST":
        return "fashion-mnist", x[:N_TRAIN], y[:N_TRAIN], xt[:N_TEST], yt[:N_TEST]
    return "digits", x, y, xt, yt


class FashionCNN(paddle.nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        nn = paddle.nn
        self.features = nn.Sequential(
            nn.Conv2D(1, 32, 3, padding=1),
            nn.BatchNorm2D(32),
            nn.ReLU(),
            nn.MaxPool2D(2),
            nn.Conv2D(32, 64, 3, padding=1),
            nn.BatchNorm2D(64),
            nn.ReLU(),
            nn.MaxPool2D(2),
            nn.Conv2D(64, 64, 3, padding=1),
            nn.BatchNorm2D(64),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2D(2)
        self.fc1 = nn.Linear(256, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = paddle.flatten(self.pool(self.features(x)), 1)
        return self.fc2(paddle.nn.functional.relu(self.fc1(x)))


def batches(x: np.ndarray, y: np.ndarray, bs: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(y), bs)]


def train(model: paddle.nn.Layer, data: list, epochs: int, lr: float = 2e-3) -> float:
    t0 = time.perf_counter()
    opt = paddle.optimizer.Adam(learning_rate=lr, parameters=model.parameters())
    model.train()
    for _ in range(epochs):
        for xb, yb in data:
            loss = paddle.nn.functional.cross_entropy(model(paddle.to_tensor(xb)), paddle.to_tensor(yb))
            loss.backward()
            opt.step()
            opt.clear_grad()
    model.eval()
    return time.perf_counter() - t0


def compress(name: str, model: paddle.nn.Layer, train_data: list, xt: np.ndarray, yt: np.ndarray, out: Path) -> dict:
    t0 = time.perf_counter()
    result = slim_auto.AutoCompression(
        model,
        train_data,
        slim_auto.accuracy_eval(xt, yt),
        config={"train": {"epochs": 1, "learning_rate": 5e-4, "label_loss_weight": 0.5}},
        target={"max_metric_drop": 0.005},
        example_inputs=xt[:1],
        out_dir=out,
        max_time=MAX_TIME,
        batch_sizes=(1, 16),
        threads=2,
        overwrite=True,
        resume=False,
    ).compress()
    wall = time.perf_counter() - t0
    b, a = result.baseline, result.best
    lat = {k: (b.latency_ms["paddle"].get(k), a.latency_ms.get("paddle", {}).get(k)) for k in ("1", "16")}
    return {
        "model": name,
        "acc_fp32": b.metric,
        "acc_after": a.metric,
        "drop_pt": 100 * (b.metric - a.metric),
        "best": a.name,
        "lat1": lat["1"],
        "lat16": lat["16"],
        "size": (b.size_bytes, a.size_bytes),
        "met": result.target_met,
        "stopped": result.stopped,
        "wall": wall,
        "candidates": [(c.name, c.status, c.metric, (c.latency_ms.get("paddle") or {}).get("1"), c.error[:80]) for c in result.candidates],
    }


def _fmt_lat(pair: tuple) -> str:
    before, after = pair
    if before is None or after is None:
        return "n/a"
    return f"{before:.2f} -> {after:.2f} ms ({before / after:.2f}x)"


HEADER = (
    "| model | FP32 acc | compressed acc | drop (pt) | chosen | Paddle Inference batch 1 | batch 16 | size | target met | compression wall time |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def print_row(r: dict) -> None:
    size = f"{r['size'][0] / 1024:.0f} -> {r['size'][1] / 1024:.0f} KiB ({r['size'][0] / r['size'][1]:.2f}x smaller)"
    print(
        f"| {r['model']} | {100 * r['acc_fp32']:.2f}% | {100 * r['acc_after']:.2f}% | {r['drop_pt']:+.2f} | {r['best']} | "
        f"{_fmt_lat(r['lat1'])} | {_fmt_lat(r['lat16'])} | {size} | {r['met']} ({r['stopped']}) | {r['wall']:.0f} s |",
        flush=True,
    )
    print(f"candidates of {r['model']}:")
    for name, status, metric, lat, err in r["candidates"]:
        m = "n/a" if metric is None else f"{100 * metric:.2f}%"
        latency = "n/a" if lat is None else f"{lat:.2f} ms"
        print(f"  {name:<28} {status:<7} acc {m:>7}  batch-1 latency {latency:>10}  {err}", flush=True)


def main() -> None:
    paddle.seed(0)
    np.random.seed(0)
    dataset, x, y, xt, yt = load_data()
    print(f"data: {dataset}, {len(y)} training and {len(yt)} test images; target: at most 0.5 point drop; max_time {MAX_TIME:.0f} s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if "cnn" not in PARTS:
            print("[skip] CNN part: not in BENCH_AUTO_PARTS")
        elif dataset == "fashion-mnist":
            cnn = FashionCNN()
            secs = train(cnn, batches(x, y), epochs=3)
            print(f"trained the Fashion-MNIST CNN in {secs:.0f} s", flush=True)
        else:
            cnn, _ = demo.train_demo_model(epochs=8)
        if "cnn" in PARTS:
            rows.append(compress("CNN", cnn, batches(x, y), xt, yt, Path(tmp) / "cnn"))
            print(HEADER)
            print_row(rows[-1])
        if "resnet18" not in PARTS:
            print("[skip] ResNet18 part: not in BENCH_AUTO_PARTS")
        elif dataset == "fashion-mnist":
            x3 = np.repeat(np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1)
            xt3 = np.repeat(np.pad(xt, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1)
            paddle.seed(0)
            net = paddle.vision.models.resnet18(num_classes=10)
            secs = train(net, batches(x3, y), epochs=1, lr=1e-3)
            print(f"trained ResNet18 (3x32x32) in {secs:.0f} s", flush=True)
            rows.append(compress("ResNet18 (32x32)", net, batches(x3, y), xt3, yt, Path(tmp) / "resnet18"))
            print(HEADER)
            print_row(rows[-1])
        else:
            print("[skip] ResNet18 part: needs Fashion-MNIST (28x28 images)")
    print("\nsummary (one run):")
    print(HEADER)
    for r in rows:
        print_row(r)


if __name__ == "__main__":
    main()
