"""``slim run`` and ``slim bench``: entry points in the ``slim.commands`` group."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from slim_core import DataError
from slim_deploy.predictor import BACKENDS

__all__ = ["register_run", "register_bench"]


def _load_inputs(files: list[str]) -> list[np.ndarray]:
    arrays = []
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise DataError(f"input file not found: {p}")
        try:
            if p.suffix == ".npz":
                with np.load(p, allow_pickle=False) as z:
                    arrays.extend(z[k] for k in z.files)
            else:
                arrays.append(np.load(p, allow_pickle=False))
        except ValueError as exc:
            raise DataError(f"{p} is not a numpy .npy/.npz file without pickled objects: {exc}") from exc
    return arrays


def _run(args: argparse.Namespace) -> int:
    from slim_core import atomic_write
    from slim_deploy.predictor import Predictor

    pred = Predictor(args.model, backend=args.backend, threads=args.threads)
    outs = pred.run(_load_inputs(args.input))
    print(pred.describe())
    for name, out in zip(pred.output_names, outs):
        line = f"{name}: shape {list(out.shape)} dtype {out.dtype}"
        if out.ndim == 2 and out.shape[1] > 1:
            line += f" top-1 {out.argmax(axis=1)[:16].tolist()}{' ...' if out.shape[0] > 16 else ''}"
        print(line)
    if args.output:
        with atomic_write(args.output, "wb", overwrite=True) as fh:
            if len(outs) == 1:
                np.save(fh, outs[0])
            else:
                np.savez(fh, **{f"output_{i}": o for i, o in enumerate(outs)})
        print(f"saved to {args.output}")
    return 0


def register_run(sub: Any) -> None:
    """Add ``slim run MODEL --input x.npy``."""
    p = sub.add_parser("run", help="run an exported model on .npy inputs (Paddle Inference, ONNX Runtime or OpenVINO)")
    p.add_argument("model", help="export directory, Paddle inference model or .onnx file")
    p.add_argument("--input", "-i", nargs="+", required=True, help=".npy file per model input (or one .npz)")
    p.add_argument("--output", "-o", help="write the outputs here (.npy for one output, else .npz)")
    p.add_argument(
        "--backend",
        default="default",
        choices=list(BACKENDS),
        help="runtime: default (the model's own), auto (fastest that agrees), paddle, onnxruntime, openvino",
    )
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_run)


def _bench(args: argparse.Namespace) -> int:
    from slim_deploy.benchmark import benchmark

    shape = [int(s) for s in args.shape.split(",")] if args.shape else None
    report = benchmark(args.model, shape, args.batch_sizes, threads=args.threads, backends=args.backends, repeat=args.repeat)
    print(report.to_markdown())
    for line in report.fastest_lines():
        print(line)
    return 0


def register_bench(sub: Any) -> None:
    """Add ``slim bench MODEL``."""
    p = sub.add_parser("bench", help="measure latency of an exported model per runtime and batch size")
    p.add_argument("model", help="export directory, Paddle inference model or .onnx file")
    p.add_argument("--shape", help="one sample's shape without batch, e.g. 3,224,224 (default: from slim.json)")
    p.add_argument("--batch-sizes", "-b", type=int, nargs="+", default=[1])
    p.add_argument("--threads", "-t", type=int, default=None)
    p.add_argument(
        "--backends",
        nargs="+",
        default=None,
        help="what to time: formats (paddle paddle-legacy onnx), runtimes (onnxruntime openvino) or pairs like onnx/openvino "
        "(default: every model file on every installed runtime that reads it)",
    )
    p.add_argument("--repeat", type=int, default=20)
    p.set_defaults(func=_bench)
