"""Routes: the ways an inference model becomes an INT8 model on one runtime.

A route names the runtime a user allows (``"paddle"``: Paddle Inference with
oneDNN, ``"onnxruntime"``), the slim-quant export format that feeds it and the
slim-deploy predictor backend that runs it. For an inference-model input the PTQ
stage tries every allowed route: each is converted in a child process (a native
crash of a converter is a failed candidate, not the end of the run), smoke-run
there once, then evaluated and timed here. Adding a runtime is one entry, as the
OpenVINO route below (available once slim-deploy's ``Predictor`` runs OpenVINO)::

    register_route(Route("openvino", format="onnx", backend="openvino", bench="onnx/openvino"))

Example:
    >>> sorted(ROUTES)[:2]
    ['onnxruntime', 'paddle']
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slim_core import ConfigError

__all__ = ["Route", "ROUTES", "register_route", "routes_for", "qdq_target", "convert_inference_model", "save_calibration", "CONVERT"]

#: the function the child process runs for the built-in routes
CONVERT = "slim_auto.routes:convert_inference_model"


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Route:
    """One runtime's path from a float inference model to a deployable INT8 model.

    Attributes:
        name: the runtime name users allow (``backends=`` / ``--backends``).
        format: the slim-quant export format (``"paddle"``: legacy INT8 program; ``"onnx"``: QDQ).
        backend: the slim-deploy ``Predictor`` backend that runs it.
        bench: the slim-deploy ``benchmark`` format that times it.
        converter: ``"module:function"`` run in a child process (see :func:`convert_inference_model`).
        available: whether the runtime is installed.
        timeout: seconds the child may take.
    """

    name: str
    format: str
    backend: str
    bench: str
    converter: str = CONVERT
    available: Callable[[], bool] = field(default=_always, compare=False)
    timeout: float = 1800.0


ROUTES: dict[str, Route] = {}


def register_route(route: Route, *, overwrite: bool = False) -> Route:
    """Add a route (a runtime) that the PTQ stage of inference models tries."""
    if route.name in ROUTES and not overwrite:
        raise ConfigError(f"route {route.name!r} is already registered")
    ROUTES[route.name] = route
    return route


def _has(module: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(module) is not None


register_route(Route("paddle", format="paddle", backend="paddle", bench="paddle"))
register_route(Route("onnxruntime", format="onnx", backend="onnxruntime", bench="onnx/onnxruntime", available=_has("onnxruntime")))


def _openvino() -> bool:
    if importlib.util.find_spec("openvino") is None:
        return False
    from slim_deploy import predictor

    return "openvino" in getattr(predictor, "BACKENDS", ())


register_route(Route("openvino", format="onnx", backend="openvino", bench="onnx/openvino", available=_openvino))


def qdq_target(format: str, backend: str) -> str:
    """The runtime an ONNX route's QDQ layout is made for (``onnx_target`` of :func:`slim_quant.quantize_inference_model`):
    its own runtime where slim-quant has a layout for it (OpenVINO: hardswish as one op, no output pair on ops read
    in float), else ONNX Runtime's."""
    import slim_quant

    return backend if format == "onnx" and backend in slim_quant.QDQ_TARGETS else "onnxruntime"


def routes_for(backends: list[str]) -> list[Route]:
    """The registered, installed routes among ``backends``, in that order.

    Raises:
        ConfigError: a name that is not a route.
    """
    out = []
    for name in backends:
        if name not in ROUTES:
            raise ConfigError(f"unknown runtime {name!r}; runtimes: {', '.join(ROUTES)}")
        if ROUTES[name].available():
            out.append(ROUTES[name])
    return out


def save_calibration(batches: list[dict[str, np.ndarray]], path: Path) -> str:
    """Calibration batches as one ``.npz`` a child process can read (``{i}::{input name}`` keys)."""
    arrays = {f"{i}::{name}": np.asarray(a) for i, b in enumerate(batches) for name, a in b.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return str(path)


def _load_calibration(path: str) -> list[dict[str, np.ndarray]]:
    batches: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            i, _, name = key.partition("::")
            batches.setdefault(int(i), {})[name] = data[key]
    return [batches[i] for i in sorted(batches)]


def convert_inference_model(
    *, source: str, config: dict[str, Any], calib: str, out: str, format: str, backend: str, threads: int = 2
) -> dict[str, Any]:
    """PTQ of an inference model into ``out`` for one format, then one run on ``backend`` (child-process side).

    An ONNX route's QDQ layout is made for its runtime (``onnx_target=backend`` of
    :func:`slim_quant.quantize_inference_model` for the runtimes in :data:`slim_quant.QDQ_TARGETS`).

    Returns:
        ``{"quantized_ops": n, "skipped": {...}}``.
    """
    import slim_quant
    from slim_deploy.predictor import Predictor

    cfg = slim_quant.PTQConfig.from_dict(config)
    batches = _load_calibration(calib)
    res = slim_quant.quantize_inference_model(
        source,
        cfg,
        batches,
        out,
        formats=(format,),
        overwrite=True,
        latency_guard=False,
        threads=threads,
        onnx_target=qdq_target(format, backend),
    )
    run = Predictor(out, backend=backend, threads=threads)  # a model the runtime cannot run crashes here, in the child
    try:
        run(*[a[:1] for a in batches[0].values()])
    finally:
        if hasattr(run, "close"):
            run.close()
    return {"quantized_ops": len(res.quantized_ops), "skipped": res.skipped}
