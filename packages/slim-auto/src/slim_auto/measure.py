"""Export a candidate and measure it: metric on the exported model, FLOPs, params, size, latency.

The metric is measured on the deployed artifact (run by slim-deploy's
``Predictor`` on Paddle Inference), not on the training-time Layer, so the number
in the report is the number the user gets. FLOPs, parameters, size on disk and
latency come from slim-analysis.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slim_auto.stages import ModelState
from slim_core import require_paddle

__all__ = ["Measurement", "export_state", "predictor_for", "measure_candidate", "measure_latency", "model_files"]


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


def export_state(state: ModelState, model_dir: Path, input_spec: list[Any], *, threads: int = 2) -> Path:
    """Write the deployable model of ``state`` into the directory ``model_dir`` (with a ``slim.json`` manifest).

    A quantized Layer goes through :func:`slim_quant.export` (the INT8 program Paddle
    Inference runs with oneDNN, int8 weights on disk); any other Layer through
    :func:`slim_deploy.export` (PIR program, outputs verified against the Layer).

    Returns:
        ``model_dir``.
    """
    from slim_deploy.export import export as deploy_export

    model_dir = Path(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
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
    if state.quantized:
        import slim_quant

        slim_quant.export(state.layer, str(model_dir), overwrite=True, latency_guard=False, threads=threads)
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


def measure_latency(
    model_dir: Path, example_inputs: list[np.ndarray], backends: list[str], batch_sizes: list[int], threads: int, m: Measurement
) -> None:
    """Median latency per backend and batch size, measured by :func:`slim_deploy.benchmark` on the exported files."""
    from slim_deploy.benchmark import benchmark
    from slim_deploy.manifest import locate_artifacts

    arts, _ = locate_artifacts(model_dir)
    shape = [int(d) for d in example_inputs[0].shape[1:]]
    for backend in backends:
        if backend == "paddle":
            fmt = next((f for f, a in arts.items() if a.runtime == "paddle"), None)
        else:
            fmt = "onnx"
        if fmt is None:
            m.notes.append(f"latency on {backend}: no model for this runtime in the export")
            continue
        try:
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
    exported: bool = False,
) -> Measurement:
    """Export ``state`` to ``prefix`` (unless ``exported``), then evaluate and measure it.

    Raises:
        Exception: whatever ``eval_fn`` raises (the engine marks the stage failed).
    """
    if not exported:
        export_state(state, prefix, input_spec, threads=threads)
    m = Measurement()
    t0 = time.perf_counter()
    predictor = predictor_for(prefix, backends[0] if backends else "paddle", threads)
    try:
        m.metric = float(eval_fn(predictor))
    finally:
        if hasattr(predictor, "close"):
            predictor.close()
    m.eval_seconds = time.perf_counter() - t0
    _flops_params(state, prefix, example_inputs, m)
    _size(prefix, m)
    measure_latency(prefix, example_inputs, backends, batch_sizes, threads, m)
    return m
