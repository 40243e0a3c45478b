"""Benchmark slim_core.graph and slim_analysis.

1. Time to trace + compute channel groups for ResNet50 and MobileNetV3-Large at 224x224
   (model construction excluded), with op / group counts.
2. FLOPs (1 FLOP = 1 MAC) next to paddle.flops' own counting rules.
3. LatencyPredictor error against measured latency (Paddle Inference, oneDNN, 1 thread):
   the op table is built on some zoo models and evaluated on others it has never seen.

Timings on a shared machine are noisy; every number in one table comes from the same run.
Run: python benchmarks/bench_analysis.py  [--size 224] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("SLIM_QUIET", "1")

import paddle  # noqa: E402
from paddle.hapi import dynamic_flops as paddle_rules  # noqa: E402

import slim_analysis as sa  # noqa: E402
import slim_core  # noqa: E402


def build(name: str) -> paddle.nn.Layer:
    paddle.seed(0)
    m = getattr(paddle.vision.models, name)(num_classes=1000)
    m.eval()
    return m


def paddle_flops_rules(model: paddle.nn.Layer, shape: list[int]) -> int:
    """paddle.flops' per-layer rules (paddle.flops itself crashes under NumPy 2 when it prints its table)."""
    hooks = []
    for m in model.sublayers():
        fn = paddle_rules.register_hooks.get(type(m))
        if list(m.children()) or fn is None:
            continue
        m.total_ops = 0
        hooks.append(m.register_forward_post_hook(lambda mm, x, y, fn=fn: fn(mm, x, y)))
    with paddle.no_grad():
        model(paddle.randn(shape))
    for h in hooks:
        h.remove()
    return sum(int(getattr(m, "total_ops", 0)) for m in model.sublayers() if not list(m.children()))


def bench_trace(size: int) -> None:
    print(f"\n## Trace + channel groups at {size}x{size}\n")
    print("| model | ops | params | trace s | groups s | groups | prunable | frozen |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("resnet50", "mobilenet_v3_large"):
        m = build(name)
        t_trace, t_group = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            g = slim_core.trace(m, input_spec=[[1, 3, size, size]])
            t1 = time.perf_counter()
            groups = g.channel_groups()
            t2 = time.perf_counter()
            t_trace.append(t1 - t0)
            t_group.append(t2 - t1)
        frozen = sum(gr.frozen for gr in groups)
        print(
            f"| {name} | {len(g.nodes)} | {len(g.params)} | {statistics.median(t_trace):.3f} | {statistics.median(t_group):.3f} "
            f"| {len(groups)} | {len(groups) - frozen} | {frozen} |"
        )


def bench_flops(size: int) -> None:
    print(f"\n## FLOPs (1 FLOP = 1 MAC) at {size}x{size}, batch 1\n")
    print("| model | slim GFLOPs | paddle.flops rules GFLOPs | ratio | params M |")
    print("|---|---:|---:|---:|---:|")
    for name in ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "vgg16"):
        m = build(name)
        ours = sa.flops(m, [1, 3, size, size])
        ref = paddle_flops_rules(m, [1, 3, size, size])
        print(f"| {name} | {ours / 1e9:.3f} | {ref / 1e9:.3f} | {ours / ref:.4f} | {sa.params(m) / 1e6:.2f} |")
    print("\nDifferences: slim also counts max-pool windows, residual/SE adds and multiplies, Linear bias adds and")
    print("hardswish/hardsigmoid; paddle.flops counts those as 0 (see docs/packages/slim-analysis.md).")


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    for rank, i in enumerate(order):
        r[i] = float(rank)
    return r


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = _ranks(a), _ranks(b)
    n = len(a)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb)) / (n * (n * n - 1)) if n > 1 else float("nan")


def bench_predictor(size: int, quick: bool) -> None:
    train = ["resnet18", "mobilenet_v2"] if not quick else ["mobilenet_v2"]
    test = ["resnet34", "mobilenet_v1", "mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x1_0", "mobilenet_v3_large"]
    if quick:
        test = test[:3]
    shape = [1, 3, size, size]
    print(f"\n## Latency predictor at {size}x{size}, batch 1, 1 thread (Paddle Inference + oneDNN)\n")
    t0 = time.perf_counter()
    train_models = [(build(n), shape) for n in train]
    pred = sa.LatencyPredictor.build(train_models, threads=1, warmup=2, repeats=8)
    print(
        f"table built on {', '.join(train)}: {len(pred.entries)} op timings in {time.perf_counter() - t0:.0f} s, "
        f"whole-model scale {pred.scale:.3f}, run overhead {pred.overhead_ms:.3f} ms"
    )
    # baseline: latency proportional to FLOPs, fitted on the same training models
    ms_per_gflop = statistics.fmean(
        sa.latency(m, s, threads=1, warmup=3, repeats=15).results[1].min_ms / (sa.flops(m, s) / 1e9) for m, s in train_models
    )
    print(f"baseline 'latency = k x FLOPs' fitted on the same models: k = {ms_per_gflop:.1f} ms/GFLOP\n")
    print(
        "| model | in table? | GFLOPs | measured min ms | measured median ms | predicted ms | error | FLOPs baseline ms | error | coverage |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    errs, base_errs, meas, preds, bases = [], [], [], [], []
    for n in train + test:
        m = build(n)
        r = sa.latency(m, shape, threads=1, warmup=5, repeats=30).results[1]
        p = pred.predict(m, shape)
        gf = sa.flops(m, shape) / 1e9
        base = ms_per_gflop * gf
        err, berr = (p.total_ms - r.min_ms) / r.min_ms, (base - r.min_ms) / r.min_ms
        if n in test:
            errs.append(abs(err))
            base_errs.append(abs(berr))
            meas.append(r.min_ms)
            preds.append(p.total_ms)
            bases.append(base)
        print(
            f"| {n} | {'built on' if n in train else 'held out'} | {gf:.3f} | {r.min_ms:.2f} | {r.median_ms:.2f} | {p.total_ms:.2f} "
            f"| {100 * err:+.0f}% | {base:.2f} | {100 * berr:+.0f}% | {100 * p.coverage:.0f}% |"
        )
    print(
        f"\nheld-out models ({len(errs)}): mean |error| predictor {100 * statistics.fmean(errs):.0f}% vs FLOPs baseline "
        f"{100 * statistics.fmean(base_errs):.0f}%; Spearman rank correlation with measured: predictor "
        f"{spearman(preds, meas):.2f}, FLOPs baseline {spearman(bases, meas):.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--quick", action="store_true", help="fewer models in the predictor part")
    ap.add_argument("--part", choices=["all", "trace", "flops", "predictor"], default="all")
    args = ap.parse_args()
    print(f"# bench_analysis (paddle {paddle.__version__}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f})")
    if args.part in ("all", "trace"):
        bench_trace(args.size)
    if args.part in ("all", "flops"):
        bench_flops(args.size)
    if args.part in ("all", "predictor"):
        bench_predictor(args.size, args.quick)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (other processes share these CPUs; compare within one run)")


if __name__ == "__main__":
    main()
