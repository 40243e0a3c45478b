"""``slim compress`` and ``slim demo`` (registered through the ``slim.commands`` entry points).

``slim compress CONFIG.yaml --model MODEL --data DATA.npz --out DIR``: the YAML is a
slim recipe or a PaddleSlim ACT recipe, and may also name ``model``, ``data``,
``out`` and ``max_time`` (the options override them). ``--data`` is an ``.npz``
with ``x`` and ``y`` (training / calibration) and optionally ``x_eval`` / ``y_eval``
(evaluation; otherwise the last 20% of ``x``/``y``); the metric is top-1 accuracy.
``--model`` is an inference model path (``.json`` / ``.pdmodel``) or
``file.py:function`` returning a ``paddle.nn.Layer``.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from slim_core import ConfigError, DataError, ModelLoadError, load_yaml

__all__ = ["register_compress", "register_demo", "load_npz_data", "load_model_arg"]

_RUN_KEYS = ("model", "data", "out", "max_time", "batch_size")


def load_npz_data(path: str | Path, batch_size: int = 64) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    """``(train batches, x_eval, y_eval)`` from an ``.npz`` holding ``x``, ``y`` and optionally ``x_eval``, ``y_eval``."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {p} does not exist")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot read {p} as .npz: {exc}") from exc
    if "x" not in data or "y" not in data:
        raise DataError(f"{p} must hold arrays 'x' and 'y' (found {', '.join(data.files)})")
    x, y = data["x"], data["y"]
    if len(x) != len(y) or len(x) < 2:
        raise DataError(f"{p}: 'x' has {len(x)} rows but 'y' has {len(y)}")
    if "x_eval" in data and "y_eval" in data:
        xe, ye = data["x_eval"], data["y_eval"]
    else:
        cut = max(int(len(x) * 0.8), 1)
        x, xe, y, ye = x[:cut], x[cut:], y[:cut], y[cut:]
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return batches, xe, ye


def load_model_arg(spec: str) -> Any:
    """An inference model path, or ``file.py:function`` called to build a Layer."""
    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        file, fn = spec.rsplit(":", 1)
        path = Path(file)
        if not path.is_file():
            raise ModelLoadError(f"model builder file {path} does not exist")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        assert mod_spec is not None and mod_spec.loader is not None
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
        if not hasattr(mod, fn):
            raise ModelLoadError(f"{path} has no function {fn!r}")
        return getattr(mod, fn)()
    return spec


def _compress(args: argparse.Namespace) -> int:
    from slim_auto.act import load_any_recipe
    from slim_auto.engine import AutoCompression, accuracy_eval

    raw = load_yaml(args.config) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{args.config}: a recipe is a mapping")
    model = args.model or raw.get("model") or (raw.get("Global") or {}).get("model_dir")
    data = args.data or raw.get("data")
    out = args.out or raw.get("out") or "slim-compress-out"
    max_time = args.max_time if args.max_time is not None else raw.get("max_time")
    if not model:
        raise ConfigError("no model: pass --model (an inference model path or file.py:function) or set 'model:' in the YAML")
    if not data:
        raise ConfigError("no data: pass --data DATA.npz (arrays x, y and optionally x_eval, y_eval) or set 'data:' in the YAML")
    recipe, translation = load_any_recipe(args.config, allow_keys=_RUN_KEYS)
    if translation is not None:
        print(translation.to_markdown())
    batches, xe, ye = load_npz_data(data, int(raw.get("batch_size", 64)))
    target = None
    if args.max_drop is not None:
        target = {**recipe.target.to_dict(), "max_metric_drop": args.max_drop}
    ac = AutoCompression(
        load_model_arg(str(model)),
        batches,
        accuracy_eval(xe, ye),
        config=recipe if recipe.stages or translation is None else None,
        target=target if target is not None else recipe.target,
        out_dir=out,
        max_time=max_time,
        backends=args.backends.split(","),
        batch_sizes=[int(b) for b in args.batch_sizes.split(",")],
        threads=args.threads,
        overwrite=args.overwrite,
    )
    if translation is not None:
        ac.translation = translation
    result = ac.compress()
    print(result.to_markdown())
    print(f"saved to {out} (model, metrics.json, report.md, report.html)")
    return 0 if result.target_met else 1


def register_compress(sub: Any) -> None:
    """Add ``slim compress``."""
    p = sub.add_parser("compress", help="compress a model from a YAML recipe (slim or PaddleSlim ACT) to an accuracy target")
    p.add_argument("config", help="recipe YAML (slim recipe or PaddleSlim ACT recipe)")
    p.add_argument("--model", help="inference model path, or file.py:function returning a paddle.nn.Layer")
    p.add_argument("--data", help=".npz with x, y (and optionally x_eval, y_eval)")
    p.add_argument("--out", help="output directory (default: slim-compress-out)")
    p.add_argument("--max-time", type=float, default=None, help="time budget in seconds")
    p.add_argument("--max-drop", type=float, default=None, help="override target.max_metric_drop")
    p.add_argument("--backends", default="paddle", help="latency backends, comma separated (paddle, onnxruntime)")
    p.add_argument("--batch-sizes", default="1", help="batch sizes to time, comma separated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    p.set_defaults(func=_compress)


def _demo(args: argparse.Namespace) -> int:
    from slim_auto.demo import run_full_demo

    result = run_full_demo(args.out, epochs=args.epochs, max_time=args.max_time)
    print(result.to_markdown())
    print(f"saved to {args.out} (model, metrics.json, report.md, report.html)")
    return 0


def register_demo(sub: Any) -> None:
    """Add ``slim demo`` (replaces slim-core's training-only demo)."""
    p = sub.add_parser("demo", help="train the built-in digits CNN, auto-compress it and write a report")
    p.add_argument("--out", default="slim-demo-out", help="output directory (default: ./slim-demo-out)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs of the demo model")
    p.add_argument("--max-time", type=float, default=600.0, help="time budget of the compression in seconds")
    p.set_defaults(func=_demo)
