"""slim-nas benchmark: OFA supernet on Fashion-MNIST, then a latency-constrained search.

1. Train an OFAMobileNetV2 supernet with progressive shrinking and in-place
   distillation for a short budget (Fashion-MNIST from the Debian package
   ``dataset-fashion-mnist`` at /usr/share/datasets/fashion-mnist, 2x2-average-pooled
   to 14x14; the bundled 8x8 digits when it is missing).
2. Measure the latency of the largest subnet (Paddle Inference, batch 1, the
   exported static model), then search (simulated annealing, Optuna when installed)
   for the most accurate subnet whose measured latency is at most ``--latency-ratio``
   of the largest one (accuracy on a held-out validation split, BN re-estimated).
3. Compare on the test split: the found subnet, the largest subnet, and the
   uniformly shrunk subnet (every dimension at the same relative position) whose
   FLOPs are closest to the found one.

Run: ``python benchmarks/bench_nas.py [--steps-per-phase N] [--trials N]``.
Timings on a loaded machine are slower; the ratios measured in one run are what count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from _fashion import fashion_or_digits  # noqa: E402


def load_data(max_train: int, seed: int = 0):
    """(x_train, y_train, x_val, y_val, x_test, y_test, name): float32 NCHW in [0, 1]."""
    name, x, y, xt, yt = fashion_or_digits("bench_nas")
    if name == "Fashion-MNIST":
        x = x.reshape(-1, 1, 14, 2, 14, 2).mean(axis=(3, 5))  # 2x2 average pooling: 14x14 inputs
        xt = xt.reshape(-1, 1, 14, 2, 14, 2).mean(axis=(3, 5))
        order = np.random.default_rng(seed).permutation(len(y))
        tr, va = order[:max_train], order[max_train : max_train + 1000]
        return x[tr], y[tr], x[va], y[va], xt[:2000], yt[:2000], "Fashion-MNIST 14x14"
    return x[:-200], y[:-200], x[-200:], y[-200:], xt, yt, "digits 8x8"


def measure_latency_ms(model, input_shape, repeats: int = 40) -> float:
    """Latency of the exported static model under Paddle Inference (batch 1, 1 thread).

    The minimum over ``repeats`` runs: on a machine shared with other jobs it is the
    most stable estimate of the model's own cost (the median moves with the load).
    """
    import paddle

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m")
        paddle.jit.save(model, path, input_spec=[paddle.static.InputSpec([1, *input_shape[1:]], "float32", "x")])
        suffix = ".json" if os.path.exists(path + ".json") else ".pdmodel"
        cfg = paddle.inference.Config(path + suffix, path + ".pdiparams")
        cfg.disable_gpu()
        cfg.set_cpu_math_library_num_threads(1)
        cfg.disable_glog_info()
        pred = paddle.inference.create_predictor(cfg)
        x = np.random.default_rng(0).random(input_shape).astype("float32")
        handle = pred.get_input_handle(pred.get_input_names()[0])
        times = []
        for i in range(repeats + 5):
            handle.copy_from_cpu(x)
            t0 = time.perf_counter()
            pred.run()
            if i >= 5:
                times.append((time.perf_counter() - t0) * 1000)
        return min(times)


def flops_of(model, input_shape) -> int:
    """FLOPs (multiply-accumulates) by slim_analysis.flops, or by forward hooks when it is not installed."""
    try:
        from slim_analysis import flops

        return int(flops(model, input_shape=list(input_shape)))
    except ImportError:
        return macs_by_hooks(model, input_shape)


def macs_by_hooks(model, input_shape) -> int:
    """Multiply-accumulates of conv and linear layers (a fast dygraph count, used inside the search loop)."""
    import paddle

    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        w = layer.weight
        if isinstance(layer, paddle.nn.Conv2D):
            total += int(np.prod(output.shape[1:])) * int(np.prod(w.shape[1:]))
        else:
            total += int(w.shape[0]) * int(w.shape[1])

    hooks = [m.register_forward_post_hook(hook) for m in model.sublayers() if isinstance(m, (paddle.nn.Conv2D, paddle.nn.Linear))]
    with paddle.no_grad():
        model(paddle.zeros(input_shape))
    for h in hooks:
        h.remove()
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps-per-phase", type=int, default=int(os.environ.get("NAS_BENCH_STEPS", 50)))
    ap.add_argument("--trials", type=int, default=int(os.environ.get("NAS_BENCH_TRIALS", 24)))
    ap.add_argument("--train-size", type=int, default=6000)
    ap.add_argument("--latency-ratio", type=float, default=0.5)
    ap.add_argument("--fit-subnets", type=int, default=10)
    args = ap.parse_args()

    import paddle

    import slim_nas
    from slim_core import demo
    from slim_nas import OFA, Constraint, OFAConfig, OFAMobileNetV2, search, uniform_config

    paddle.seed(0)
    x, y, xv, yv, xt, yt, data_name = load_data(args.train_size)
    size = x.shape[-1]
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(y) - 63, 64)]
    calib = batches[:4]
    net = OFAMobileNetV2(
        num_classes=10,
        in_channels=1,
        input_size=size,
        stages=((16, 1, 1), (24, 2, 2), (32, 3, 2), (48, 2, 1)),
        stem_channels=16,
        head_channels=96,
        kernel_choices=(3, 5),
        expand_choices=(2, 4, 6),
        width_choices=(0.5, 0.75, 1.0),
    )
    ofa = OFA(net, OFAConfig(steps_per_phase=args.steps_per_phase, subnets_per_step=1, learning_rate=3e-3))
    input_shape = [1, 1, size, size]
    t0 = time.perf_counter()
    history = ofa.train(batches)  # phases: largest, kernel, depth, width
    train_s = time.perf_counter() - t0
    print(f"[bench_nas] {data_name}: supernet trained {len(history)} phases x {args.steps_per_phase} steps in {train_s:.0f} s")

    space = ofa.space()
    largest = space.largest()
    lat_largest = measure_latency_ms(ofa.export(largest), input_shape)
    limit = args.latency_ratio * lat_largest

    # a latency predictor fitted on measured subnets (least squares on FLOPs and block count),
    # so the search does not export and time every candidate it proposes
    t0 = time.perf_counter()
    rng = np.random.default_rng(1)
    fit_cfgs = [largest, space.smallest()] + [space.sample(rng) for _ in range(args.fit_subnets)]

    def features(cfg):
        blocks = sum(v for k, v in cfg.items() if k.endswith(".depth"))
        return [macs_by_hooks(ofa.export(cfg), input_shape) / 1e6, blocks, 1.0]

    feats = np.array([features(c) for c in fit_cfgs])
    lats = np.array([measure_latency_ms(ofa.export(c), input_shape) for c in fit_cfgs])
    coef, *_ = np.linalg.lstsq(feats, lats, rcond=None)
    fit_err = float(np.mean(np.abs(feats @ coef - lats) / lats))
    print(
        f"[bench_nas] latency predictor fitted on {len(fit_cfgs)} measured subnets in {time.perf_counter() - t0:.0f} s, mean error {fit_err * 100:.1f}%"
    )

    def predicted_latency(cfg):
        return float(np.dot(features(cfg), coef))

    smallest_pred = predicted_latency(space.smallest())
    if smallest_pred > limit:
        # the limit is below what even the smallest subnet achieves: aim half-way between smallest and largest
        limit = (smallest_pred + predicted_latency(largest)) / 2
        print(f"[bench_nas] {args.latency_ratio} x largest is below the smallest subnet's predicted latency; limit set to {limit:.3f} ms")

    def val_accuracy(cfg):
        return demo.evaluate(ofa.export(cfg, calib_data=calib, n_calib_batches=4), xv, yv)

    t0 = time.perf_counter()
    result = search(
        val_accuracy,
        space,
        "sa",
        n_trials=args.trials,
        seed=0,
        constraints=[Constraint("latency_ms", predicted_latency, max=limit)],
        strategy_options={"init_temperature": 0.02, "reduce_rate": 0.9},
    )
    search_s = time.perf_counter() - t0
    found = result.best

    # the uniformly shrunk subnet with FLOPs closest to the found one
    f_found = macs_by_hooks(ofa.export(found), input_shape)
    uniform = min(
        (uniform_config(space, f) for f in np.linspace(0, 1, 21)),
        key=lambda cfg: abs(macs_by_hooks(ofa.export(cfg), input_shape) - f_found),
    )

    rows = []
    for name, cfg in (("largest", largest), ("found (search)", found), ("uniform shrink", uniform)):
        model = ofa.export(cfg, calib_data=calib, n_calib_batches=4)
        lat = min(measure_latency_ms(model, input_shape) for _ in range(3))
        npar = sum(int(np.prod(p.shape)) for p in model.parameters())
        rows.append((name, demo.evaluate(model, xt, yt), lat, predicted_latency(cfg), flops_of(model, input_shape), npar))
    base = rows[0]
    print(
        f"\n## slim-nas OFA on {data_name} (test n={len(yt)}); latency limit {limit:.3f} ms ({limit / lat_largest:.2f} x largest); "
        f"predicted latency; search: {args.trials} SA trials in {search_s:.0f} s\n"
    )
    print(
        "| subnet | top-1 | measured latency ms (Paddle Inference, b=1, 1 thread) | vs largest | predicted ms | FLOPs | vs largest | params |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, acc, lat, pred, fl, npar in rows:
        print(f"| {name} | {acc * 100:.2f}% | {lat:.3f} | {lat / base[2]:.2f}x | {pred:.3f} | {fl:,} | {fl / base[4]:.2f}x | {npar:,} |")
    print(
        f"\nfound config: {found}\nuniform config: {uniform}\nslim_nas {slim_nas.__version__}; machine shared with other jobs: compare ratios."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
