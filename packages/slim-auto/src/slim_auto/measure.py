"""Export a candidate and measure it: metric on the exported model, FLOPs, params, size, latency.

The metric is measured on the deployed artifact (run by slim-deploy's
``Predictor`` on the first allowed runtime: Paddle Inference, ONNX Runtime or
OpenVINO), not on the training-time Layer, so the number in the report is the
number the user gets. Latency is timed on every allowed runtime, each by its own
name (a route's ``bench`` pair, e.g. ``"onnx/openvino"``). FLOPs, parameters and
size on disk come from slim-analysis.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slim_auto.routes import ROUTES
from slim_auto.stages import ModelState
from slim_core import require_paddle
from slim_core.log import native_output

__all__ = [
    "Measurement",
    "export_state",
    "export_formats",
    "evaluate",
    "predictor_for",
    "measure_candidate",
    "measure_latency",
    "model_files",
]


@dataclass
class Measurement:
    """Numbers of one candidate (None where not measurable, with a note saying why)."""

    metric: float | None = None
    flops: int | None = None
    params: int | None = None
    size_bytes: int | None = None
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    eval_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def model_files(model_dir: Path) -> list[Path]:
    """The files of an exported model directory (model files and manifest)."""
    return sorted(p for p in Path(model_dir).iterdir() if p.is_file())


def export_state(
    state: ModelState, model_dir: Path, input_spec: list[Any], *, threads: int = 2, formats: tuple[str, ...] = ("paddle",)
) -> Path:
    """Write the deployable model of ``state`` into the directory ``model_dir`` (with a ``slim.json`` manifest).

    A quantized Layer goes through :func:`slim_quant.export` in ``formats`` (the INT8
    program Paddle Inference runs with oneDNN, int8 weights on disk; ONNX QDQ); any other
    Layer through :func:`slim_deploy.export` (outputs verified against the Layer). A state
    already exported (a search trial's directory) is copied.

    Returns:
        ``model_dir``.
    """
    from slim_deploy.export import export as deploy_export

    model_dir = Path(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    if state.export_dir is not None and Path(state.export_dir).is_dir():
        shutil.copytree(state.export_dir, model_dir, dirs_exist_ok=True)
        return model_dir
    if state.layer is None:
        assert state.path is not None
        src = Path(state.path)
        if src.is_dir():
            shutil.copytree(src, model_dir, dirs_exist_ok=True)
        else:  # an inference model prefix given by the user: copy its files, unchanged
            model_dir.mkdir(parents=True, exist_ok=True)
            for f in src.parent.iterdir():
                if f.is_file() and f.name.startswith(src.name + "."):
                    shutil.copy2(f, model_dir / f.name)
        return model_dir
    if state.int8:
        import slim_quant

        with native_output():  # oneDNN's INT8 pass report goes to the debug log
            slim_quant.export(state.layer, str(model_dir), formats=formats, overwrite=True, latency_guard=False, threads=threads)
        return model_dir
    compression = {"stages": [dict(a) for a in state.applied]} if state.applied else None
    deploy_export(state.layer, str(model_dir), input_spec=input_spec, format="paddle", compression=compression, overwrite=True)
    return model_dir


def predictor_for(model_dir: Path, backend: str = "paddle", threads: int = 2) -> Callable[..., np.ndarray]:
    """A numpy callable running the exported model (slim-deploy Predictor)."""
    from slim_deploy.predictor import Predictor

    return Predictor(str(model_dir), backend=backend, threads=threads)


def _analysis(name: str) -> Any:
    """A public function of slim-analysis by name."""
    import slim_analysis

    fn = getattr(slim_analysis, name, None)
    if fn is None or not callable(fn):
        raise AttributeError(f"slim_analysis.{name} is not available in this version")
    return fn


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160] if text else ''}"


def _flops_params(state: ModelState, model_dir: Path, example_inputs: list[np.ndarray], m: Measurement) -> None:
    paddle = require_paddle()
    one = [a[:1] for a in example_inputs]
    targets: list[Any] = [state.layer] if state.layer is not None else []
    targets.append(str(model_dir))
    errors = []
    for target in targets:
        try:
            if isinstance(target, str):
                m.flops = int(_analysis("flops")(target, [list(a.shape) for a in one] if len(one) > 1 else list(one[0].shape)))
            else:
                m.flops = int(_analysis("flops")(target, example_inputs=[paddle.to_tensor(a) for a in one]))
            break
        except Exception as exc:  # e.g. a fake-quant layer the graph tracer does not know; try the exported program
            errors.append(_first_line(exc))
    if m.flops is None:
        m.notes.append("FLOPs not measured: " + " / ".join(errors))
    try:
        m.params = int(_analysis("params")(state.layer if state.layer is not None else str(model_dir)))
    except Exception as exc:
        m.notes.append(f"params not counted: {_first_line(exc)}")


def _size(model_dir: Path, m: Measurement) -> None:
    try:
        m.size_bytes = int(_analysis("model_size")(str(model_dir)).total_bytes)
    except Exception:  # several artifacts or an exotic layout: the bytes of the model files themselves
        m.size_bytes = int(sum(f.stat().st_size for f in model_files(model_dir) if f.name != "slim.json"))


def _bench_format(arts: dict[str, Any], manifest: Any, backend: str) -> str | None:
    """The slim-deploy benchmark format that runs ``backend`` on these artifacts, or None when none can."""
    route = ROUTES.get(backend)
    bench = route.bench if route is not None else backend
    if bench == "paddle":
        return next((f for f, a in arts.items() if a.runtime == "paddle"), None)
    if bench.partition("/")[0] == "onnx" and manifest is not None and manifest.int8 and "onnx" not in arts:
        return None  # converting a Paddle INT8 program to ONNX aborts paddle2onnx: never try it in this process
    return bench


def time_side_by_side(
    models: dict[int, tuple[Path, list[str]]],
    example_inputs: list[np.ndarray],
    batch_sizes: list[int],
    threads: int,
    *,
    budget_s: float = 4.0,
    min_rounds: int = 20,
    max_rounds: int = 300,
    warm_s: float = 0.25,
    block: int = 5,
) -> dict[int, dict[str, dict[str, float]]]:
    """Median latency of several exported models on their runtimes, all timed in one round robin.

    A load change on a shared machine then hits every model alike, so their ratios hold, and
    that includes ratios across runtimes: the original on its fastest runtime against a candidate
    delivered for another (timing one runtime after the other lets a load spike decide that
    comparison). Each round visits the runtimes in turn; within a runtime the models alternate
    run by run, ``block`` times. When there are several runtimes, each visit starts with
    ``warm_s`` seconds of untimed runs: right after a switch the previous runtime's worker
    threads still spin on the cores (oneDNN's OpenMP threads for up to 200 ms) and the caches
    hold the other model, which would make whichever runtime comes next look slower.

    Args:
        models: ``{id: (model_dir, runtimes)}``.
        budget_s: seconds per runtime and batch size (at least ``min_rounds`` timed runs per model and runtime).
        max_rounds: at most this many timed runs per model and runtime.

    Returns:
        ``{id: {runtime: {batch: median ms}}}``.
    """
    from slim_deploy.manifest import locate_artifacts

    out: dict[int, dict[str, dict[str, float]]] = {cid: {} for cid in models}
    groups: dict[str, dict[int, Any]] = {}  # runtime -> {id: predictor}
    try:
        for backend in dict.fromkeys(b for _, bs in models.values() for b in bs):
            for cid, (model_dir, backends) in models.items():
                if backend not in backends:
                    continue
                try:
                    arts, manifest = locate_artifacts(model_dir)
                    if _bench_format(arts, manifest, backend) is None:
                        continue
                    with native_output():
                        groups.setdefault(backend, {})[cid] = predictor_for(model_dir, _backend(backend), threads)
                except Exception:  # a model this runtime cannot run keeps its earlier timing
                    continue
        for batch in batch_sizes:
            x = [np.repeat(a[:1], batch, axis=0) for a in example_inputs]
            times: dict[tuple[int, str], list[float]] = {(cid, b): [] for b, g in groups.items() for cid in g}
            if not times:
                break
            with native_output():
                for g in groups.values():
                    for p in g.values():
                        for _ in range(3):
                            p(*x)
                end = time.perf_counter() + budget_s * len(groups)
                while True:
                    n = min(len(ts) for ts in times.values())
                    if n >= max_rounds or (n >= min_rounds and time.perf_counter() > end):
                        break
                    for backend, g in groups.items():
                        if len(groups) > 1:
                            first = next(iter(g.values()))
                            t_warm = time.perf_counter() + warm_s
                            while time.perf_counter() < t_warm:
                                first(*x)
                        for _ in range(block):
                            for cid, p in g.items():
                                t0 = time.perf_counter()
                                p(*x)
                                times[(cid, backend)].append(time.perf_counter() - t0)
            for (cid, backend), ts in times.items():
                out[cid].setdefault(backend, {})[str(batch)] = float(np.median(ts) * 1e3)
    finally:
        for g in groups.values():
            for p in g.values():
                if hasattr(p, "close"):
                    p.close()
    return out


def measure_latency(
    model_dir: Path, example_inputs: list[np.ndarray], backends: list[str], batch_sizes: list[int], threads: int, m: Measurement
) -> None:
    """Median latency per runtime and batch size, measured by :func:`slim_deploy.benchmark` on the exported files."""
    from slim_deploy.benchmark import benchmark
    from slim_deploy.manifest import locate_artifacts

    arts, manifest = locate_artifacts(model_dir)
    shape = [int(d) for d in example_inputs[0].shape[1:]]
    for backend in backends:
        fmt = _bench_format(arts, manifest, backend)
        if fmt is None:
            m.notes.append(f"latency on {backend}: no model for this runtime in the export")
            continue
        try:
            with native_output():
                rep = benchmark(
                    str(model_dir),
                    input_shape=shape,
                    batch_sizes=list(batch_sizes),
                    threads=threads,
                    backends=[fmt],
                    warmup=5,
                    repeat=40,
                    max_seconds=8.0,
                )
        except Exception as exc:  # a runtime that cannot run this model is reported, not fatal
            m.notes.append(f"latency on {backend}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
            continue
        m.latency_ms[backend] = {str(r.batch_size): float(r.latency.median_ms) for r in rep.rows}


def _backend(name: str) -> str:
    route = ROUTES.get(name)
    return route.backend if route is not None else name


def export_formats(backends: list[str]) -> tuple[str, ...]:
    """The slim-quant export formats the allowed runtimes need (``("paddle", "onnx")`` for both)."""
    return tuple(dict.fromkeys(ROUTES[b].format if b in ROUTES else "paddle" for b in backends)) or ("paddle",)


def measure_candidate(
    state: ModelState,
    prefix: Path,
    *,
    eval_fn: Callable[[Callable[..., np.ndarray]], float],
    example_inputs: list[np.ndarray],
    input_spec: list[Any],
    backends: list[str],
    batch_sizes: list[int],
    threads: int,
    metric: float | None = None,
) -> Measurement:
    """Export ``state`` to ``prefix``, then evaluate it on the first runtime and time it on each.

    A state converted for one runtime (``state.runtime``, an inference model's route) is
    evaluated and timed on that runtime only. ``metric``: already measured on these very
    files (a search trial), so not evaluated again.

    Raises:
        Exception: whatever ``eval_fn`` raises (the engine marks the stage failed).
    """
    if state.runtime:
        backends = [state.runtime]
    export_state(state, prefix, input_spec, threads=threads, formats=export_formats(backends))
    m = Measurement()
    t0 = time.perf_counter()
    m.metric = metric if metric is not None else evaluate(prefix, eval_fn, backends[0] if backends else "paddle", threads)
    m.eval_seconds = time.perf_counter() - t0
    _flops_params(state, prefix, example_inputs, m)
    _size(prefix, m)
    measure_latency(prefix, example_inputs, backends, batch_sizes, threads, m)
    return m


def evaluate(model_dir: Path, eval_fn: Callable[[Callable[..., np.ndarray]], float], backend: str, threads: int) -> float:
    """``eval_fn`` on the exported model running on ``backend`` (a runtime name)."""
    with native_output():
        predictor = predictor_for(model_dir, _backend(backend), threads)
    try:
        return float(eval_fn(predictor))
    finally:
        if hasattr(predictor, "close"):
            predictor.close()
