"""``slim compress`` and ``slim demo`` (registered through the ``slim.commands`` entry points).

``slim compress CONFIG.yaml --model MODEL --data DATA.npz --out DIR``: the YAML is a
slim recipe or a PaddleSlim ACT recipe, and may also name ``model``, ``data``,
``out`` and ``max_time`` (the options override them). ``--data`` is an ``.npz``
with ``x`` and ``y`` (training / calibration) and optionally ``x_eval`` / ``y_eval``
(evaluation; otherwise the last 20% of ``x``/``y``); the metric is top-1 accuracy,
or what ``--eval module:function`` returns (a callable taking a predictor, the
contract of ``AutoCompression(eval_fn=...)``; ``y`` is then optional).
``--model`` is an inference model path (``.json`` / ``.pdmodel``) or
``file.py:function`` returning a ``paddle.nn.Layer``; a recipe's ``model:`` naming
code runs it only with ``--allow-code``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from slim_core import ConfigError, DataError, ModelLoadError, load_yaml

__all__ = ["register_compress", "register_demo", "load_npz_data", "load_model_arg", "load_eval_arg"]

_RUN_KEYS = ("model", "data", "out", "max_time", "batch_size")


def load_npz_data(path: str | Path, batch_size: int = 64, *, labels: bool = True) -> tuple[list[Any], np.ndarray, np.ndarray | None]:
    """``(train batches, x_eval, y_eval)`` from an ``.npz`` holding ``x``, ``y`` and optionally ``x_eval``, ``y_eval``.

    With ``labels=False`` (a user eval function), ``y`` is optional and the batches are ``x`` only when it is absent.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {p} does not exist")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot read {p} as .npz: {exc}") from exc
    if "x" not in data or ("y" not in data and labels):
        raise DataError(f"{p} must hold arrays 'x' and 'y' (found {', '.join(data.files)})")
    if "y" not in data:
        x = data["x"]
        if len(x) < 1:
            raise DataError(f"{p}: 'x' is empty")
        return [x[i : i + batch_size] for i in range(0, len(x), batch_size)], x, None
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


def _exec_file(path: Path) -> Any:
    """Import a Python file given by the user as a module."""
    mod_spec = importlib.util.spec_from_file_location(path.stem, path)
    assert mod_spec is not None and mod_spec.loader is not None
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def _names_code(spec: str) -> bool:
    return ":" in spec and spec.rsplit(":", 1)[0].endswith(".py")


def load_model_arg(spec: str, *, allow_code: bool = True) -> Any:
    """An inference model path, or ``file.py:function`` called to build a Layer (only with ``allow_code``).

    Raises:
        ConfigError: ``file.py:function`` without ``allow_code``.
        ModelLoadError: the file or function does not exist.
    """
    if _names_code(spec):
        if not allow_code:
            raise ConfigError(
                f"the recipe's model: {spec!r} names Python code; slim runs code named in a data file only with "
                "--allow-code (or pass it as --model yourself)"
            )
        file, fn = spec.rsplit(":", 1)
        path = Path(file)
        if not path.is_file():
            raise ModelLoadError(f"model builder file {path} does not exist")
        mod = _exec_file(path)
        if not hasattr(mod, fn):
            raise ModelLoadError(f"{path} has no function {fn!r}")
        return getattr(mod, fn)()
    return spec


def load_eval_arg(spec: str) -> Callable[[Any], float]:
    """``module:function`` (or ``path/to/file.py:function``): the user's ``eval_fn(predict) -> float``.

    The module is imported with the current directory on ``sys.path``.

    Raises:
        ConfigError: not ``module:function``, the module cannot be imported, or the name is not a callable.

    Example:
        >>> load_eval_arg("math:fsum")  # doctest: +ELLIPSIS
        <built-in function fsum>
    """
    mod_name, sep, fn_name = spec.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise ConfigError(f"--eval {spec!r}: give module:function, e.g. --eval my_metrics:exact_match")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist")
            mod = _exec_file(path)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            mod = importlib.import_module(mod_name)
    except Exception as exc:
        raise ConfigError(
            f"--eval {spec!r}: cannot import {mod_name!r} ({type(exc).__name__}: {exc}); the module must be importable "
            "(in the current directory or on PYTHONPATH) or be given as path/to/file.py:function"
        ) from exc
    fn = mod
    for part in fn_name.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ConfigError(f"--eval {spec!r}: {mod_name!r} has no {fn_name!r}")
    if not callable(fn):
        raise ConfigError(f"--eval {spec!r}: {fn_name!r} is not callable; it must be eval_fn(predict) -> float")
    return fn  # type: ignore[return-value]


def _print_result(result: Any, out: Any) -> None:
    print(result.to_markdown())
    if not result.target_met and result.failures:
        print("failed candidates:")
        for c in result.failures:
            print(f"  #{c.id} {c.name}: {c.error}")
    missed = result.missed
    if missed:
        print("candidates that missed the target:")
        for c, why in missed:
            print(f"  #{c.id} {c.name}: {'; '.join(why)}")
    print(f"saved to {out} (model, metrics.json, report.md, report.html)")


def _compress(args: argparse.Namespace) -> int:
    from slim_auto.act import load_any_recipe
    from slim_auto.engine import AutoCompression, accuracy_eval

    raw = load_yaml(args.config) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{args.config}: a recipe is a mapping")
    model_from_file = not args.model
    model = args.model or raw.get("model") or (raw.get("Global") or {}).get("model_dir")
    data = args.data or raw.get("data")
    out = args.out or raw.get("out") or "slim-compress-out"
    args.interrupt_hint = f"run the same command again to resume (finished stages are checkpointed in {out})"
    max_time = args.max_time if args.max_time is not None else raw.get("max_time")
    if not model:
        raise ConfigError("no model: pass --model (an inference model path or file.py:function) or set 'model:' in the YAML")
    if not data:
        raise ConfigError("no data: pass --data DATA.npz (arrays x, y and optionally x_eval, y_eval) or set 'data:' in the YAML")
    recipe, translation = load_any_recipe(args.config, allow_keys=_RUN_KEYS)
    if translation is not None:
        print(translation.to_markdown())
    user_eval = load_eval_arg(args.eval) if args.eval else None
    built = load_model_arg(str(model), allow_code=args.allow_code or not model_from_file)
    batches, xe, ye = load_npz_data(data, int(raw.get("batch_size", 64)), labels=user_eval is None)
    if user_eval is None and ye is None:  # pragma: no cover - load_npz_data requires y without --eval
        raise DataError(f"{data}: 'y' is needed for the default top-1 metric")
    target = None
    if args.max_drop is not None:
        target = {**recipe.target.to_dict(), "max_metric_drop": args.max_drop}
    ac = AutoCompression(
        built,
        batches,
        user_eval if user_eval is not None else accuracy_eval(xe, ye),
        config=recipe if recipe.stages or translation is None else None,
        target=target if target is not None else recipe.target,
        out_dir=out,
        max_time=max_time,
        backends=args.backends.split(",") if args.backends else None,
        batch_sizes=[int(b) for b in args.batch_sizes.split(",")],
        threads=args.threads,
        overwrite=args.overwrite,
    )
    if translation is not None:
        ac.translation = translation
    result = ac.compress()
    _print_result(result, out)
    return 0 if result.target_met or not result.target.is_set else 1


def register_compress(sub: Any) -> None:
    """Add ``slim compress``."""
    p = sub.add_parser("compress", help="compress a model from a YAML recipe (slim or PaddleSlim ACT) to an accuracy target")
    p.add_argument("config", help="recipe YAML (slim recipe or PaddleSlim ACT recipe)")
    p.add_argument("--model", help="inference model path, or file.py:function returning a paddle.nn.Layer")
    p.add_argument("--data", help=".npz with x, y (and optionally x_eval, y_eval)")
    p.add_argument("--out", help="output directory (default: slim-compress-out)")
    p.add_argument("--max-time", type=float, default=None, help="time budget in seconds")
    p.add_argument("--max-drop", type=float, default=None, help="override target.max_metric_drop")
    p.add_argument(
        "--eval",
        metavar="MODULE:FUNCTION",
        help="metric: a function taking a predictor and returning a float (higher is better unless the target says otherwise); "
        "default: top-1 accuracy on the .npz",
    )
    p.add_argument(
        "--backends",
        default=None,
        help="runtimes allowed, comma separated (paddle, onnxruntime); default: paddle for a Layer, every installed runtime "
        "for an inference model",
    )
    p.add_argument("--batch-sizes", default="1", help="batch sizes to time, comma separated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty directory slim did not create, or replace an earlier run's results"
    )
    p.add_argument("--allow-code", action="store_true", help="let the recipe's model: key name Python code (file.py:function) to run")
    p.set_defaults(func=_compress)


def _demo(args: argparse.Namespace) -> int:
    from slim_auto.demo import run_full_demo

    result = run_full_demo(args.out, epochs=args.epochs, max_time=args.max_time)
    _print_result(result, args.out)
    return 0


def register_demo(sub: Any) -> None:
    """Add ``slim demo`` (replaces slim-core's training-only demo)."""
    p = sub.add_parser(
        "demo", help="train a CNN on the bundled digits, compress it (prune, distill, INT8) to within 1 point and write a report"
    )
    p.add_argument("--out", default="slim-demo-out", help="output directory (default: ./slim-demo-out)")
    p.add_argument("--epochs", type=int, default=4, help="training epochs of the demo model")
    p.add_argument("--max-time", type=float, default=600.0, help="time budget of the compression in seconds")
    p.set_defaults(func=_demo)
