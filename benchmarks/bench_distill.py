"""Knowledge distillation on Fashion-MNIST: a small student with vs without a larger teacher.

Measured in one run, side by side:
1. a teacher CNN trained on the training split;
2. the same small student trained for the same number of steps (same seed, same
   batches) with the task loss only, with soft-label KD (KL, T=4), with KD plus
   a feature hint (MSE, weight 0.1, through a 1x1 adaptor), and with DKD;
3. when slim_prune.prune_ is installed, the teacher pruned to about 50% FLOPs and
   fine-tuned for the same steps with vs without distillation from the unpruned
   teacher;
4. few labels (bundled digits): a teacher trained on the whole training split, a
   tiny student trained on only 100 or 300 labelled images for the same steps,
   with vs without KD from that teacher (three seeds).

Data: Fashion-MNIST from /usr/share/datasets/fashion-mnist (Debian package
``dataset-fashion-mnist``); without it the bundled digits of slim_core.demo.
Environment knobs: BENCH_DISTILL_TRAIN (training images, default 20000),
BENCH_DISTILL_STEPS (student steps, default 400), BENCH_DISTILL_SEEDS (default 2),
BENCH_DISTILL_PARTS (comma list of fashion, prune, few_labels; default all).
"""

from __future__ import annotations

import copy
import os
import sys
import time

import numpy as np
import paddle
import paddle.nn as nn
from _fashion import fashion_or_digits  # noqa: E402

from slim_core.demo import build_tiny_cnn, evaluate, load_digits, train_demo_model
from slim_core.progress import set_quiet
from slim_distill import Distiller, fit

BATCH = 64


def load_data(n_train: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return fashion_or_digits("bench_distill", n_train)


class ConvNet(nn.Layer):
    """conv-BN-ReLU stages with 2x2 pooling, global average pooling, linear head."""

    def __init__(self, widths: tuple[int, ...], num_classes: int = 10) -> None:
        super().__init__()
        layers, cin = [], 1
        for i, w in enumerate(widths):
            layers += [nn.Conv2D(cin, w, 3, padding=1), nn.BatchNorm2D(w), nn.ReLU()]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2D(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(paddle.flatten(self.pool(self.features(x)), 1))


def batches(x: np.ndarray, y: np.ndarray, steps: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out, order, pos = [], rng.permutation(len(y)), 0
    for _ in range(steps):
        if pos + BATCH > len(y):
            order, pos = rng.permutation(len(y)), 0
        idx = order[pos : pos + BATCH]
        pos += BATCH
        out.append((x[idx], y[idx]))
    return out


def train(student: nn.Layer, teacher: nn.Layer | None, cfg: dict | None, data: list, lr: float = 3e-3) -> float:
    """Train ``student`` on ``data`` (one pass); distillation from ``teacher`` when ``cfg`` is given."""
    if cfg is None:  # the same loop with a zero-weight term from a negligible stand-in teacher
        cfg, teacher = {"logits": {"loss": "kl", "weight": 0.0}}, ConvNet((2,))
    d = Distiller(student, teacher, cfg, example_inputs=paddle.to_tensor(data[0][0][:4]))
    sched = paddle.optimizer.lr.CosineAnnealingDecay(lr, T_max=len(data))
    opt = paddle.optimizer.Adam(learning_rate=sched, parameters=d.parameters())
    t0 = time.perf_counter()
    fit(d, data, opt, epochs=1, scheduler_step="step")
    d.remove_hooks()
    return time.perf_counter() - t0


def flops(model: nn.Layer, shape: list[int]) -> int:
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        if isinstance(layer, nn.Conv2D):
            total += int(np.prod(output.shape[1:])) * int(np.prod(layer.weight.shape[1:]))
        elif isinstance(layer, nn.Linear):
            total += int(layer.weight.shape[0] * layer.weight.shape[1])

    hs = [m.register_forward_post_hook(hook) for m in model.sublayers() if isinstance(m, (nn.Conv2D, nn.Linear))]
    was = model.training
    model.eval()
    with paddle.no_grad():
        model(paddle.zeros(shape))
    if was:
        model.train()
    for h in hs:
        h.remove()
    return total


def main() -> int:
    set_quiet(True)
    paddle.set_device("cpu")
    parts = set(os.environ.get("BENCH_DISTILL_PARTS", "fashion,prune,few_labels").split(","))
    if "fashion" in parts or "prune" in parts:
        fashion_and_prune(parts)
    if "few_labels" in parts:
        few_labels()
    return 0


def fashion_and_prune(parts: set[str]) -> None:
    n_train = int(os.environ.get("BENCH_DISTILL_TRAIN", "20000"))
    steps = int(os.environ.get("BENCH_DISTILL_STEPS", "400"))
    seeds = int(os.environ.get("BENCH_DISTILL_SEEDS", "2"))
    name, x, y, xt, yt = load_data(n_train)
    shape = [1, *x.shape[1:]]
    print(f"# slim-distill benchmark: {name}, {len(y)} training / {len(yt)} test images, batch {BATCH}")

    paddle.seed(0)
    teacher = ConvNet((32, 64, 128))
    t_steps = 2 * len(y) // BATCH
    t_time = train(teacher, None, None, batches(x, y, t_steps, seed=100))
    t_acc = evaluate(teacher, xt, yt)
    print(f"teacher ConvNet(32,64,128): {t_acc * 100:.2f}% after {t_steps} steps ({t_time:.0f} s), {flops(teacher, shape) / 1e6:.2f} MMACs")
    if "fashion" in parts:
        student_vs_teacher(teacher, t_acc, t_time, x, y, xt, yt, steps, seeds, shape)
    if "prune" in parts:
        prune_recovery(teacher, x, y, xt, yt, steps, shape)


def student_vs_teacher(teacher: nn.Layer, t_acc: float, t_time: float, x, y, xt, yt, steps: int, seeds: int, shape: list[int]) -> None:
    student_widths = (8, 16, 32)
    variants = {
        "task loss only": None,
        "+ KD (KL, T=4)": {"logits": {"loss": "kl", "temperature": 4.0, "weight": 1.0}},
        "+ KD + feature hint (MSE, adaptor)": {
            "logits": {"loss": "kl", "temperature": 4.0, "weight": 1.0},
            "pairs": [{"student": "features.9", "teacher": "features.9", "loss": "mse", "weight": 0.1}],
        },
        "+ DKD (alpha 1, beta 2, T=4)": {"logits": {"loss": "dkd", "params": {"alpha": 1.0, "beta": 2.0}}},
    }
    s_macs = flops(ConvNet(student_widths), shape)
    print(f"student ConvNet{student_widths}: {s_macs / 1e6:.2f} MMACs; {steps} steps each, seeds 0..{seeds - 1}, same batches per seed\n")
    rows = {}
    for label, cfg in variants.items():
        accs, secs = [], []
        for seed in range(seeds):
            paddle.seed(seed)
            student = ConvNet(student_widths)
            secs.append(train(student, teacher, cfg, batches(x, y, steps, seed=seed)))
            accs.append(evaluate(student, xt, yt))
        rows[label] = (accs, secs)
    base = np.mean(rows["task loss only"][0])
    print("| student training | test accuracy (mean) | per seed | vs task loss only | train time |")
    print("|---|---|---|---|---|")
    for label, (accs, secs) in rows.items():
        per = ", ".join(f"{a * 100:.2f}" for a in accs)
        print(f"| {label} | {np.mean(accs) * 100:.2f}% | {per} | {(np.mean(accs) - base) * 100:+.2f} pt | {np.mean(secs):.0f} s |")
    print(f"| (teacher) | {t_acc * 100:.2f}% | | | {t_time:.0f} s |")


def prune_recovery(teacher: nn.Layer, x, y, xt, yt, steps: int, shape: list[int]) -> None:
    try:
        import slim_prune
    except ImportError:
        print("\n[skip] pruned-model recovery: slim_prune is not installed")
        return
    if not hasattr(slim_prune, "prune_") or not hasattr(slim_prune, "PruneConfig"):
        print("\n[skip] pruned-model recovery: slim_prune has no prune_/PruneConfig yet")
        return
    print("\n## teacher pruned to ~50% FLOPs, fine-tuned for the same steps")
    rows = []
    for label, cfg in [
        ("fine-tune, task loss only", None),
        ("fine-tune + KD from the unpruned teacher", {"logits": {"loss": "kl", "temperature": 4.0, "weight": 1.0}}),
    ]:
        pruned = copy.deepcopy(teacher)
        try:
            slim_prune.prune_(pruned, slim_prune.PruneConfig(flops_ratio=0.5), example_inputs=paddle.to_tensor(xt[:2]))
        except Exception as exc:  # report and move on: the rest of the benchmark stands
            print(f"[skip] slim_prune.prune_ failed on the teacher: {type(exc).__name__}: {exc}")
            return
        before = evaluate(pruned, xt, yt)
        train(pruned, teacher, cfg, batches(x, y, steps, seed=7), lr=1e-3)
        rows.append((label, before, evaluate(pruned, xt, yt), flops(pruned, shape)))
    full = flops(teacher, shape)
    print("| recovery | FLOPs kept | accuracy after pruning | after fine-tuning |")
    print("|---|---|---|---|")
    for label, before, after, macs in rows:
        print(f"| {label} | {macs / full * 100:.0f}% | {before * 100:.2f}% | {after * 100:.2f}% |")


def few_labels(steps: int = 300, seeds: int = 3) -> None:
    """KD where it is known to pay: the student has few labelled images, the teacher was trained on many."""
    x, y = load_digits("train")
    xt, yt = load_digits("test")
    teacher, t_acc = train_demo_model(epochs=8, seed=0, width=16)
    print(f"\n## few labels (digits 8x8): teacher TinyCNN(16) trained on all {len(y)} images: {t_acc * 100:.2f}%")
    print(f"student TinyCNN(4), {steps} steps of 32 drawn from the labelled subset, seeds 0..{seeds - 1}\n")
    print("| labelled images | task loss only | + KD (KL, T=4) | gain |")
    print("|---|---|---|---|")
    for n in (100, 300):
        accs: dict[str, list[float]] = {"plain": [], "kd": []}
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            idx = rng.permutation(len(y))[:n]
            data = [(x[b], y[b]) for b in (rng.choice(idx, 32) for _ in range(steps))]
            for label, cfg in (("plain", None), ("kd", {"logits": {"loss": "kl", "temperature": 4.0, "weight": 1.0}})):
                paddle.seed(seed)
                student = build_tiny_cnn(width=4)
                train(student, teacher, cfg, data)
                accs[label].append(evaluate(student, xt, yt))
        plain, kd = np.mean(accs["plain"]), np.mean(accs["kd"])
        print(f"| {n} | {plain * 100:.2f}% | {kd * 100:.2f}% | {(kd - plain) * 100:+.2f} pt |")


if __name__ == "__main__":
    sys.exit(main())
