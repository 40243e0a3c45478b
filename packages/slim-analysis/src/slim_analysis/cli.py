"""``slim analyze``: summary table, model size, measured latency, latency tables."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from slim_core import DataError, ModelLoadError

__all__ = ["register", "run", "load_model_arg"]


def register(subparsers: Any) -> None:
    """Add the ``analyze`` subcommand (entry point of the ``slim.commands`` group)."""
    p = subparsers.add_parser(
        "analyze",
        help="per-layer FLOPs/params table, model size, latency, latency tables",
        description="Analyse a model: an inference model path (prefix, .json or .pdmodel), a Python file that defines "
        "build_model() returning a paddle.nn.Layer, or 'zoo:NAME' for a paddle.vision model with random weights.",
    )
    p.add_argument("model", nargs="?", help="model path, file.py (with build_model()), or zoo:resnet18")
    p.add_argument("--input-shape", default=None, help="e.g. 1,3,224,224 (several inputs: 1,3,224,224;1,10)")
    p.add_argument("--loop-trips", type=int, default=None, help="iterations of while loops (a loop body counts once if not given)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--max-rows", type=int, default=None, help="limit the per-layer table")
    p.add_argument("--latency", action="store_true", help="also measure latency (Paddle Inference, oneDNN)")
    p.add_argument(
        "--backend", default="paddle", choices=["paddle", "onnxruntime", "openvino"], help="runtime for --latency and --build-latency-table"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-sizes", default="1", help="comma-separated, e.g. 1,8")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument(
        "--build-latency-table", metavar="OUT.json", default=None, help="time every op of MODEL on this machine and save the table"
    )
    p.add_argument("--predict-latency", metavar="TABLE.json", default=None, help="predict latency of MODEL from a saved table")
    p.set_defaults(func=run)


def _shapes(text: str | None) -> list[list[int]] | None:
    if not text:
        return None
    try:
        return [[int(d) for d in part.replace("x", ",").split(",") if d.strip()] for part in text.split(";") if part.strip()]
    except ValueError as exc:
        raise DataError(f"--input-shape {text!r} is not a comma-separated list of ints such as 1,3,224,224") from exc


def load_model_arg(spec: str) -> Any:
    """A Layer from ``zoo:NAME`` or ``file.py`` (``build_model()``), else the path itself (inference model)."""
    import paddle

    if spec.startswith("zoo:"):
        name = spec[4:]
        fn = getattr(paddle.vision.models, name, None)
        if fn is None or not callable(fn):
            raise ModelLoadError(f"unknown paddle.vision model {name!r}")
        return fn()
    path = Path(spec)
    if path.suffix == ".py":
        if not path.is_file():
            raise ModelLoadError(f"Python file not found: {path}")
        mod_spec = importlib.util.spec_from_file_location(f"slim_user_model_{path.stem}", path)
        mod = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
        try:
            mod_spec.loader.exec_module(mod)  # type: ignore[union-attr]
        except Exception as exc:
            raise ModelLoadError(f"running {path} failed: {type(exc).__name__}: {exc}") from exc
        build = getattr(mod, "build_model", None) or getattr(mod, "model", None)
        if build is None:
            raise ModelLoadError(f"{path} defines no build_model() function (nor a 'model' object)")
        return build() if callable(build) and not isinstance(build, paddle.nn.Layer) else build
    return spec


def run(args: argparse.Namespace) -> int:
    from slim_analysis.latency import latency
    from slim_analysis.predictor import LatencyPredictor
    from slim_analysis.size import model_size
    from slim_analysis.summary import summary

    if not args.model:
        raise DataError("give a MODEL: an inference-model path, a .py file with build_model(), or zoo:NAME")
    model = load_model_arg(args.model)
    shapes = _shapes(args.input_shape)
    is_path = isinstance(model, str)
    if not is_path and shapes is None:
        raise DataError("--input-shape is required for a Layer, e.g. --input-shape 1,3,224,224")
    out: dict[str, Any] = {}
    s = summary(model, shapes, loop_trips=args.loop_trips)
    out["summary"] = s.to_dict()
    if is_path:
        out["size"] = model_size(model).to_dict()
    lat_shape = shapes or [[1 if d < 0 else d for d in shp] for shp in s.input_shapes]  # dynamic batch -> 1
    if args.latency:
        bs = tuple(int(b) for b in args.batch_sizes.split(",") if b.strip())
        rep = latency(model, lat_shape, threads=args.threads, backend=args.backend, batch_sizes=bs, repeats=args.repeats)
        out["latency"] = rep.to_dict()
    if args.build_latency_table:
        pred = LatencyPredictor.build([(model, lat_shape)], threads=args.threads, backend=args.backend)
        pred.save(args.build_latency_table)
        out["latency_table"] = {"path": args.build_latency_table, "entries": len(pred.entries), "scale": pred.scale}
    if args.predict_latency:
        pr = LatencyPredictor.load(args.predict_latency).predict(model, lat_shape)
        out["predicted_latency_ms"] = pr.total_ms
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(s.to_markdown(max_rows=args.max_rows))
    if "size" in out:
        print(f"\nSize: {model_size(model)}")
    if args.latency:
        print()
        print(rep.to_markdown())
    if "latency_table" in out:
        t = out["latency_table"]
        print(f"\nLatency table with {t['entries']} op timings written to {t['path']} (whole-model scale {t['scale']:.3f})")
    if "predicted_latency_ms" in out:
        print(f"\nPredicted latency: {out['predicted_latency_ms']:.3f} ms")
    sys.stdout.flush()
    return 0
