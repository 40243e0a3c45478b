"""slim-prune benchmark: accuracy after 50% FLOPs pruning per criterion, and measured speed-up.

Part 1: a BN-CNN trained on Fashion-MNIST (``/usr/share/datasets/fashion-mnist``, Debian
package ``dataset-fashion-mnist``; falls back to the bundled digits set when missing) is
pruned to 50% of its FLOPs with each criterion, then fine-tuned briefly.

Part 2: ResNet18 at 224x224, pruned to 50% of its FLOPs, timed with Paddle Inference
(oneDNN, 2 threads, batch 1) before and after, alternating runs so that machine load
hits both alike. The goal is a >= 1.7x speed-up.

Run: ``python benchmarks/bench_prune.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _fashion import fashion_or_digits  # noqa: E402


def load_data(quick: bool):
    name, x, y, xt, yt = fashion_or_digits("bench_prune")
    if name != "Fashion-MNIST":
        return name, {"train": (x, y), "test": (xt, yt)}
    n_train, n_test = (12000, 2000) if quick else (30000, 10000)  # a subset keeps the run to minutes on 2 cores
    mean, std = 0.2860, 0.3530
    return name, {"train": ((x[:n_train] - mean) / std, y[:n_train]), "test": ((xt[:n_test] - mean) / std, yt[:n_test])}


def build_cnn(in_hw: int):
    import paddle

    nn = paddle.nn

    class CNN(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2D(1, 32, 3, padding=1), nn.BatchNorm2D(32)
            self.conv2, self.bn2 = nn.Conv2D(32, 64, 3, padding=1), nn.BatchNorm2D(64)
            self.conv3, self.bn3 = nn.Conv2D(64, 128, 3, padding=1), nn.BatchNorm2D(128)
            self.pool = nn.MaxPool2D(2)
            self.fc1 = nn.Linear(128 * (in_hw // 4) ** 2, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            r = paddle.nn.functional.relu
            x = self.pool(r(self.bn1(self.conv1(x))))
            x = self.pool(r(self.bn2(self.conv2(x))))
            x = r(self.bn3(self.conv3(x)))
            return self.fc2(r(self.fc1(paddle.flatten(x, 1))))

    return CNN()


def train(model, x, y, epochs: float, lr: float = 2e-3, seed: int = 0) -> None:
    import paddle

    opt = paddle.optimizer.Adam(learning_rate=lr, parameters=model.parameters())
    rng = np.random.default_rng(seed)
    model.train()
    steps = int(np.ceil(len(y) / 128) * epochs)
    order = np.concatenate([rng.permutation(len(y)) for _ in range(int(np.ceil(epochs)) + 1)])
    for i in range(steps):
        idx = order[i * 128 : (i + 1) * 128]
        loss = paddle.nn.functional.cross_entropy(model(paddle.to_tensor(x[idx])), paddle.to_tensor(y[idx]))
        loss.backward()
        opt.step()
        opt.clear_grad()
    model.eval()


def accuracy(model, x, y) -> float:
    from slim_core import demo

    return demo.evaluate(model, x, y)


def part_accuracy(quick: bool) -> None:
    import paddle

    import slim_prune

    name, data = load_data(quick)
    (x, y), (xt, yt) = data["train"], data["test"]
    hw = x.shape[-1]
    paddle.seed(0)
    base = build_cnn(hw)
    t0 = time.perf_counter()
    train(base, x, y, epochs=1 if quick else 2)
    base_acc = accuracy(base, xt, yt)
    print(f"\n## Part 1: {name} CNN, 50% FLOPs removed, then {0.25 if quick else 0.5} epoch fine-tune")
    print(f"trained in {time.perf_counter() - t0:.0f} s; dense accuracy {base_acc:.2%}\n")
    print("| criterion | FLOPs removed | params removed | acc. after pruning | acc. after fine-tune | dense acc. |")
    print("|---|---|---|---|---|---|")
    ex = paddle.to_tensor(xt[:1])
    for crit in ["l1", "l2", "fpgm", "bn_scale", "taylor"]:
        model = build_cnn(hw)
        model.set_state_dict(base.state_dict())
        model.eval()
        xb, yb = paddle.to_tensor(x[:256]), paddle.to_tensor(y[:256])
        loss_fn = (lambda m, xb=xb, yb=yb: paddle.nn.functional.cross_entropy(m(xb), yb)) if crit == "taylor" else None
        res = slim_prune.prune_(model, slim_prune.PruneConfig(flops_ratio=0.5, criterion=crit), ex, loss_fn=loss_fn)
        pruned_acc = accuracy(model, xt, yt)
        train(model, x, y, epochs=0.25 if quick else 0.5, lr=1e-3, seed=1)
        tuned_acc = accuracy(model, xt, yt)
        print(
            f"| {crit} | {res.flops_ratio:.1%} | {res.params_ratio:.1%} | {pruned_acc:.2%} | {tuned_acc:.2%} | {base_acc:.2%} |",
            flush=True,
        )


def part_latency(quick: bool) -> None:
    import paddle

    import slim_analysis
    import slim_prune

    print("\n## Part 2: ResNet18 224x224, Paddle Inference (oneDNN), 2 threads, batch 1")
    paddle.seed(0)
    rows = []
    dense = paddle.vision.models.resnet18()
    dense.eval()
    x = paddle.randn([1, 3, 224, 224])
    variants = {"dense": dense}
    for label, cfg in [
        ("50% FLOPs (l1, global)", slim_prune.PruneConfig(flops_ratio=0.5)),
        ("50% FLOPs (l1, global, round_to=8)", slim_prune.PruneConfig(flops_ratio=0.5, round_to=8)),
        ("50% FLOPs (l1, uniform ratio)", slim_prune.PruneConfig(flops_ratio=0.5, global_ranking=False, round_to=8)),
    ]:
        m = paddle.vision.models.resnet18()
        m.set_state_dict(dense.state_dict())
        m.eval()
        res = slim_prune.prune_(m, cfg, x)
        variants[label] = m
        rows.append((label, res))
    repeats = 15 if quick else 40
    medians: dict[str, list[float]] = {k: [] for k in variants}
    mins: dict[str, list[float]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for i, (k, m) in enumerate(variants.items()):
            paths[k] = str(Path(tmp) / f"v{i}")
            paddle.jit.save(m, paths[k], input_spec=[paddle.static.InputSpec([1, 3, 224, 224], "float32", "x")])
        for _ in range(2 if quick else 3):  # alternate so that background load hits every variant alike
            for k in variants:
                rep = slim_analysis.latency(paths[k], [1, 3, 224, 224], threads=2, batch_sizes=(1,), warmup=5, repeats=repeats)
                medians[k].append(rep.results[1].median_ms)
                mins[k].append(rep.results[1].min_ms)
    base_med, base_min = statistics.median(medians["dense"]), min(mins["dense"])
    flops0 = slim_analysis.flops(dense, [1, 3, 224, 224])
    print("\n| model | GFLOPs (MACs) | params | median latency | speed-up (median) | fastest run | speed-up (fastest) |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| dense | {flops0 / 1e9:.2f} | {slim_analysis.params(dense) / 1e6:.2f} M | {base_med:.2f} ms | 1.00x | {base_min:.2f} ms | 1.00x |"
    )
    for label, res in rows:
        med, best = statistics.median(medians[label]), min(mins[label])
        print(
            f"| {label} | {res.flops_after / 1e9:.2f} | {res.params_after / 1e6:.2f} M | {med:.2f} ms | {base_med / med:.2f}x "
            f"| {best:.2f} ms | {base_min / best:.2f}x |"
        )
    print("\n(goal: >= 1.7x for 50% FLOPs; on a shared machine the fastest run is the least disturbed by other load)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller data and fewer timing runs")
    ap.add_argument("--part", choices=["all", "accuracy", "latency"], default="all")
    args = ap.parse_args()
    try:
        import paddle  # noqa: F401

        import slim_prune  # noqa: F401
    except ImportError as exc:
        print(f"[skip] slim-prune benchmark needs paddle and slim-prune installed: {exc}")
        return
    from slim_core import set_quiet

    set_quiet(True)
    if args.part in ("all", "accuracy"):
        part_accuracy(args.quick)
    if args.part in ("all", "latency"):
        part_latency(args.quick)


if __name__ == "__main__":
    main()
