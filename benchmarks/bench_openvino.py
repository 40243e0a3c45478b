"""OpenVINO next to ONNX Runtime on the same files: FP32 and slim's INT8 QDQ export, side by side in one run.

For ResNet18, MobileNetV2 and MobileNetV3-large (hardswish, SE gates) at 224x224 (random weights, latency only), batch 1 and 16, 2 threads:

- FP32: the paddle2onnx export of the Layer, run by ONNX Runtime and by OpenVINO;
- INT8: ``slim_quant.quantize`` (percentile calibration on random images) + ``slim_quant.export(formats=("onnx",))``,
  the same QDQ file run by ONNX Runtime and by OpenVINO; where it differs, also the export laid out for OpenVINO
  (``onnx_target="openvino"``: no output QDQ on quantized ops read in float), run by OpenVINO;
- the anchor: ONNX Runtime's ``quantize_static`` (u8/s8 per channel QDQ, same calibration images), run by both;
- NNCF's own PTQ (``nncf.quantize``, preset performance, same calibration images, fast bias correction on), run by
  OpenVINO, twice: of the OpenVINO model read from the FP32 ONNX file (FakeQuantize in an OpenVINO IR, the route
  NNCF documents for OpenVINO) and of the ONNX model itself (NNCF's QDQ ONNX). Skipped with a message when ``nncf``
  is not installed. The line after the table gives slim's INT8 ms over NNCF's (below 1: slim is faster).

All of them are slim-core runners (``slim_core.runtime.open_runner``: OpenVINO with INFERENCE_NUM_THREADS,
PERFORMANCE_HINT=LATENCY, f32 float parts); timed in alternating blocks (``timed_round_robin`` of
bench_quant_ptq.py) so machine load hits them alike: read the ratios. Also printed: how many layers OpenVINO
executes in INT8 on each QDQ file (``precision_report``, from its execution graph) and the output agreement of the runtimes.

Run: ``python benchmarks/bench_openvino.py [--quick]`` (``--quick``: MobileNetV2 only, fewer rounds).
Skips with a message when openvino, onnxruntime or paddle2onnx is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("SLIM_QUIET", "1")
os.environ.setdefault("GLOG_minloglevel", "3")

import paddle  # noqa: E402
from bench_quant_ptq import ort_quantize_static, quiet_fds, timed_round_robin  # noqa: E402

import slim_deploy  # noqa: E402
import slim_quant as sq  # noqa: E402
from slim_core.runtime import open_runner, precision_report  # noqa: E402
from slim_core.runtime.openvino import OpenVINORunner  # noqa: E402

THREADS = int(os.environ.get("BENCH_OV_THREADS", "2"))
SLIM_OV = "OpenVINO INT8 (same QDQ file)"
SLIM_OV_TARGET = "OpenVINO INT8 (slim QDQ, onnx_target='openvino')"
NNCF_OV = "OpenVINO INT8 (NNCF PTQ of the OpenVINO model)"
NNCF_ONNX = "OpenVINO INT8 (NNCF PTQ of the ONNX model, QDQ)"


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine per sample; 0 where either output is all zeros (NNCF's MobileNetV2 here: its scales underflow)."""
    a, b = a.reshape(a.shape[0], -1).astype("float64"), b.reshape(b.shape[0], -1).astype("float64")
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.where(norm > 0, (a * b).sum(1) / np.where(norm > 0, norm, 1.0), 0.0)))


def nncf_quantize(fp32_onnx: Path, out_dir: Path, batches: list[np.ndarray], preset: str = "performance") -> dict[str, Path]:
    """NNCF's PTQ of ``fp32_onnx`` on ``batches``: ``{"openvino": IR .xml, "onnx": QDQ .onnx}`` ({} without nncf).

    The OpenVINO route reads the ONNX file with OpenVINO and quantizes that model (FakeQuantize ops, saved as an IR
    with FP32 weights); the ONNX route quantizes the ONNX graph (QuantizeLinear/DequantizeLinear).
    """
    if importlib.util.find_spec("nncf") is None:
        return {}
    import logging

    import nncf
    import onnx
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    kind = getattr(nncf.QuantizationPreset, preset.upper())
    src = onnx.load(str(fp32_onnx))
    name = src.graph.input[0].name
    out = {"openvino": out_dir / f"nncf_{preset}.xml", "onnx": out_dir / f"nncf_{preset}.onnx"}
    q_ov = nncf.quantize(ov.Core().read_model(str(fp32_onnx)), nncf.Dataset(batches), preset=kind, subset_size=len(batches))
    ov.save_model(q_ov, str(out["openvino"]), compress_to_fp16=False)
    q_onnx = nncf.quantize(src, nncf.Dataset(batches, lambda b: {name: b}), preset=kind, subset_size=len(batches))
    onnx.save(q_onnx, str(out["onnx"]))
    return out


def bench(arch: str, quick: bool) -> None:
    rng = np.random.default_rng(0)
    calib = [rng.random((4, 3, 224, 224)).astype("float32") for _ in range(4)]
    paddle.seed(0)
    model = getattr(paddle.vision.models, arch)()
    model.eval()
    with tempfile.TemporaryDirectory(prefix="slim-bench-ov-") as tmp, quiet_fds():
        d = Path(tmp)
        slim_deploy.export(model, d / "fp32", [None, 3, 224, 224], format="onnx")
        t0 = time.perf_counter()
        qmodel = sq.quantize(model, sq.PTQConfig(calibrator="percentile"), calib)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sq.export(qmodel, d / "int8", formats=("onnx",), latency_guard=False)
            t_q = time.perf_counter() - t0
            res_ov = sq.export(qmodel, d / "int8_ov", formats=("onnx",), latency_guard=False, onnx_target="openvino")
        fp32, int8 = d / "fp32" / "model.onnx", d / "int8" / "model.onnx"
        ortq = ort_quantize_static(fp32, d / "ortq.onnx", calib)  # the anchor: ONNX Runtime's own u8/s8 QDQ
        nncf_files = nncf_quantize(fp32, d, calib)
        runners = {
            "ORT FP32": open_runner(fp32, "onnxruntime", threads=THREADS),
            "OpenVINO FP32": open_runner(fp32, "openvino", threads=THREADS),
            "ORT INT8 (slim QDQ)": open_runner(int8, "onnxruntime", threads=THREADS),
            SLIM_OV: open_runner(int8, "openvino", threads=THREADS),
            "ORT INT8 (ORT quantize_static QDQ)": open_runner(ortq, "onnxruntime", threads=THREADS),
            "OpenVINO INT8 (ORT quantize_static QDQ)": open_runner(ortq, "openvino", threads=THREADS),
        }
        same_layout = res_ov.qdq_tensors == res.qdq_tensors
        if not same_layout:  # the OpenVINO layout differs only where a quantized output is read in float
            runners[SLIM_OV_TARGET] = open_runner(d / "int8_ov" / "model.onnx", "openvino", threads=THREADS)
        if nncf_files:
            runners[NNCF_OV] = OpenVINORunner(nncf_files["openvino"], threads=THREADS)
            runners[NNCF_ONNX] = open_runner(nncf_files["onnx"], "openvino", threads=THREADS)
        reports = {k: precision_report(runners[k], [[1, 3, 224, 224]]) for k in runners if k.startswith("OpenVINO INT8")}
        probe = calib[0]
        outs = {k: r.run([probe])[0] for k, r in runners.items()}
        results: dict[str, dict[int, float]] = {k: {} for k in runners}
        for bs, rounds, per in ((1, 2 if quick else 4, 10), (16, 2 if quick else 3, 2 if quick else 3)):
            x = rng.random((bs, 3, 224, 224)).astype("float32")
            calls = {k: (lambda r=r, x=x: r.run([x])) for k, r in runners.items()}
            for k, v in timed_round_robin(calls, rounds, per).items():
                results[k][bs] = v
    best = {bs: min(results[k][bs] for k in results if "FP32" in k) for bs in (1, 16)}
    print(f"### {arch} (quantize + QDQ export {t_q:.1f} s; {THREADS} threads, median ms)\n")
    print("| path | batch 1 ms | vs fastest FP32 | batch 16 ms | vs fastest FP32 | cosine vs ORT FP32 |")
    print("|---|---|---|---|---|---|")
    for k, r in results.items():
        print(
            f"| {k} | {r[1]:.2f} | {best[1] / r[1]:.2f}x | {r[16]:.1f} | {best[16] / r[16]:.2f}x | {_cos(outs[k], outs['ORT FP32']):.4f} |"
        )
    if same_layout:
        print(f"\nslim's QDQ export with onnx_target='openvino' is the same graph here ({res.qdq_tensors['onnx']} QDQ tensors): no row")
    a, b = outs[SLIM_OV], outs["ORT INT8 (slim QDQ)"]
    print(f"\nOpenVINO INT8 vs ONNX Runtime INT8 on the same file: cosine {_cos(a, b):.4f}")
    if SLIM_OV_TARGET in results:
        r, t = results[SLIM_OV_TARGET], results[SLIM_OV]
        print(
            f"slim's QDQ laid out for OpenVINO / for ONNX Runtime, both on OpenVINO: batch 1 {r[1] / t[1]:.2f}, batch 16 {r[16] / t[16]:.2f}"
        )
    for s in (SLIM_OV, SLIM_OV_TARGET):
        for k in (NNCF_OV, NNCF_ONNX):
            if s in results and k in results:
                print(
                    f"{s} / {k}: batch 1 {results[s][1] / results[k][1]:.2f}, "
                    f"batch 16 {results[s][16] / results[k][16]:.2f} (absolute ms; below 1: slim is faster)"
                )
    if not nncf_files:
        print("[skip] NNCF rows: nncf not installed (pip install nncf)")
    print("What OpenVINO ran in INT8:")
    for k, rep in reports.items():
        print(f"- {k}: {rep.summary()}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="MobileNetV2 only, fewer timing rounds")
    args = parser.parse_args()
    missing = [m for m in ("openvino", "onnxruntime", "paddle2onnx", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"[skip] bench_openvino: {', '.join(missing)} not installed (pip install 'slim-deploy[onnx,openvino]' 'slim-quant[onnx]')")
        return
    print(f"# OpenVINO vs ONNX Runtime, FP32 and INT8 QDQ, {THREADS} threads (timings under whatever load the machine has)\n")
    for arch in ["mobilenet_v2"] if args.quick else ["resnet18", "mobilenet_v2", "mobilenet_v3_large"]:
        bench(arch, args.quick)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
