"""Deployment runtimes side by side: FP32 latency of ResNet18 and MobileNetV2 at 224x224.

Measured in one run, for batch 1 and 16 (2 threads by default):
1. Paddle Inference (oneDNN) on the PIR program (``model.json``),
2. Paddle Inference on the legacy program (``model_legacy.pdmodel``) of the same Layer,
3. ONNX Runtime on the paddle2onnx export of the same Layer (skipped, with a message,
   without the ``slim-deploy[onnx]`` extra);
every export verified against the Layer first (max abs error printed). The formats
are timed in interleaved rounds so machine load hits them alike: read the ratios.
Then ``Predictor(backend="auto")`` says which path it picks, and a RepVGG-reparameterized
ResNet18 is timed in training form vs merged (one conv per block).

Weights are random (no downloads); latency does not depend on them.
Environment knobs: BENCH_DEPLOY_THREADS (default 2), BENCH_DEPLOY_REPEAT (timed rounds, default 15),
BENCH_DEPLOY_BATCHES (default "1,16").
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import paddle

import slim_deploy
from slim_core.progress import set_quiet

THREADS = int(os.environ.get("BENCH_DEPLOY_THREADS", "2"))
REPEAT = int(os.environ.get("BENCH_DEPLOY_REPEAT", "15"))
BATCHES = [int(b) for b in os.environ.get("BENCH_DEPLOY_BATCHES", "1,16").split(",")]
SPEC = [None, 3, 224, 224]


def _onnx_available() -> bool:
    missing = [m for m in ("paddle2onnx", "onnxruntime", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"[skip] ONNX Runtime column: {', '.join(missing)} not installed (pip install 'slim-deploy[onnx]')")
    return not missing


def _models() -> dict[str, paddle.nn.Layer]:
    paddle.seed(0)
    return {"ResNet18": paddle.vision.models.resnet18(), "MobileNetV2": paddle.vision.models.mobilenet_v2()}


def _runtime_table(work: Path, formats: list[str]) -> None:
    print(f"\n## FP32 latency at 224x224, {THREADS} threads, median of {REPEAT} interleaved rounds (ms)\n")
    header = "| model | batch | " + " | ".join(formats) + " | " + " | ".join(f"{f} vs paddle" for f in formats[1:]) + " |"
    print(header)
    print("|" + "---|" * (2 + 2 * len(formats) - 1))
    picks = []
    for name, model in _models().items():
        model.eval()
        out = work / name
        t0 = time.perf_counter()
        result = slim_deploy.export(model, out, SPEC, format=formats)
        errs = ", ".join(f"{f} {r.max_abs_err:.1e}" for f, r in result.verification.items())
        print(f"<!-- {name}: exported and verified in {time.perf_counter() - t0:.1f} s; max abs err vs Layer: {errs} -->", file=sys.stderr)
        rep = slim_deploy.benchmark(out, batch_sizes=BATCHES, threads=THREADS, repeat=REPEAT, warmup=3, max_seconds=20)
        for b in BATCHES:
            rows = {r.format: r.latency.median_ms for r in rep.rows if r.batch_size == b}
            cells = " | ".join(f"{rows[f]:.2f}" for f in formats)
            ratios = " | ".join(f"{rows['paddle'] / rows[f]:.2f}x" for f in formats[1:])
            print(f"| {name} | {b} | {cells} | {ratios} |")
        pred = slim_deploy.Predictor(out, backend="auto", threads=THREADS)
        picks.append(f"- {name}: {pred.describe()}")
        pred.close()
    print('\n`Predictor(backend="auto")` (batch 1 probe, outputs checked against the primary PIR path):\n')
    print("\n".join(picks))


def _rep_table(work: Path) -> None:
    paddle.seed(0)
    model = paddle.vision.models.resnet18()
    model.eval()
    train_form = slim_deploy.reparameterize(model, slim_deploy.RepConfig(block="repvgg"), SPEC)
    train_form.eval()
    merged = slim_deploy.merge(train_form)
    slim_deploy.export(train_form, work / "rep_train", SPEC)
    slim_deploy.export(merged, work / "rep_merged", SPEC)
    # both directories run on the same runtime; time them in one interleaved loop via a joint benchmark per batch
    print("\n## RepVGG-reparameterized ResNet18 (16 blocks): training form vs merged, Paddle Inference PIR, batch 1 (ms)\n")
    a = slim_deploy.Predictor(work / "rep_train", threads=THREADS)
    b = slim_deploy.Predictor(work / "rep_merged", threads=THREADS)
    import numpy as np

    from slim_analysis.latency import measure, stats_of

    x = np.random.default_rng(0).standard_normal([1, 3, 224, 224]).astype("float32")
    r = slim_deploy.compare(a, b, [x])
    for p in (a, b):
        measure(lambda p=p: p.run([x]), warmup=3, repeat=1)
    ta, tb = [], []
    for _ in range(REPEAT):
        ta.append(measure(lambda: a.run([x]), warmup=0, repeat=1).median_ms)
        tb.append(measure(lambda: b.run([x]), warmup=0, repeat=1).median_ms)
    ma, mb = stats_of(ta).median_ms, stats_of(tb).median_ms
    print("| form | median ms | speed-up |\n|---|---:|---:|")
    print(f"| training (3 branches + BN) | {ma:.2f} | 1.00x |")
    print(f"| merged (one 3x3 conv) | {mb:.2f} | {ma / mb:.2f}x |")
    print(f"\nmerged vs training form outputs: {r}")


def main() -> int:
    set_quiet(True)
    formats = ["paddle", "paddle-legacy"] + (["onnx"] if _onnx_available() else [])
    print(f"slim-deploy benchmark: paddle {paddle.__version__}, {os.cpu_count()} CPUs visible (shared machine: compare ratios)")
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        _runtime_table(Path(tmp), formats)
        _rep_table(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
