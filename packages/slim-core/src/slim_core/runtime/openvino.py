"""OpenVINO on CPU: reads ONNX (QDQ INT8 included) and legacy Paddle programs; the ``openvino`` extras bring it.

Settings that matter for latency: ``INFERENCE_NUM_THREADS`` (the thread count),
``PERFORMANCE_HINT=LATENCY``, and ``INFERENCE_PRECISION_HINT=f32`` by default, so
an FP32 model computes in FP32 (OpenVINO would otherwise pick bf16 on CPUs that
have it, and outputs would no longer match Paddle or ONNX Runtime). Compiled
models are kept twice: per input shape inside the process (a runner compiles each
shape once, and a second runner of the same file and settings reuses it), and in
OpenVINO's own model cache under a slim-owned folder (``$SLIM_CACHE_DIR/openvino``,
default ``~/.cache/slim/openvino``), so a new process does not compile again.

:func:`precision_report` says which layers OpenVINO actually executes in INT8
(from the compiled model's execution graph, ``runtimePrecision`` per layer).

Example:
    >>> from slim_core.runtime import open_runner, precision_report      # doctest: +SKIP
    >>> r = open_runner("model_int8.onnx", "openvino", threads=2)         # doctest: +SKIP
    >>> print(precision_report(r, [[1, 3, 224, 224]]).summary())          # doctest: +SKIP
    openvino INT8: Convolution 20/20, MatMul 1/1 (21 of 23 compute layers)
"""

from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slim_core.config import check_choice
from slim_core.errors import DataError, ModelLoadError, error_summary
from slim_core.runtime.base import InputInfo, Runner, cache_dir, register_runtime

__all__ = ["OpenVINORunner", "PrecisionReport", "precision_report", "PRECISIONS", "clear_compiled_cache"]

PRECISIONS = ("f32", "bf16", "f16")
_NOT_COMPUTE = {
    "Input",
    "Output",
    "Parameter",
    "Result",
    "Const",
    "Constant",
    "Reorder",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Concatenation",
}
_INT8 = ("i8", "u8", "int8", "uint8")
_MAX_COMPILED = 8

_lock = threading.Lock()
_core_obj: Any = None
_compiled: OrderedDict[tuple[Any, ...], Any] = OrderedDict()


def _core() -> Any:
    """One ``openvino.Core`` per process (creating one loads the plugins)."""
    global _core_obj
    import openvino as ov

    with _lock:
        if _core_obj is None:
            _core_obj = ov.Core()
        return _core_obj


def clear_compiled_cache() -> None:
    """Drop the compiled models kept in this process (OpenVINO's on-disk cache is left as it is)."""
    with _lock:
        _compiled.clear()


def _dim(d: Any) -> int | None:
    return int(d.get_length()) if d.is_static else None


@register_runtime("openvino", module="openvino", extra="openvino", reads=("onnx", "paddle-legacy"), description="OpenVINO (CPU plugin)")
class OpenVINORunner(Runner):
    """A model compiled by OpenVINO's CPU plugin, one compiled model per concrete input shape.

    Args:
        model_file: ``.onnx`` or legacy ``.pdmodel`` (its ``.pdiparams`` next to it).
        threads: ``INFERENCE_NUM_THREADS``.
        int8: unused (OpenVINO runs the quantize/dequantize pairs of a QDQ model in INT8 by itself).
        precision: ``INFERENCE_PRECISION_HINT`` for the float parts: ``"f32"`` (default, matches
            Paddle/ONNX Runtime), ``"bf16"`` or ``"f16"`` (faster where the CPU has them, less exact).
        cache: keep OpenVINO's compiled-model cache in the slim cache folder.
        properties: more compile properties, e.g. ``{"DYNAMIC_QUANTIZATION_GROUP_SIZE": "128"}`` that a
            weight-only export records in ``slim.json`` (``Predictor`` passes them on).

    Example:
        >>> r = OpenVINORunner(Path("model.onnx"), params_file=None, threads=2)   # doctest: +SKIP
        >>> outs = r.run([x])                                                    # doctest: +SKIP
    """

    def __init__(
        self,
        model_file: Path,
        *,
        params_file: Path | None = None,
        threads: int = 1,
        int8: bool = False,
        precision: str = "f32",
        cache: bool = True,
        properties: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model_file, threads)
        check_choice("precision", precision, PRECISIONS)
        core = _core()
        try:
            self._model = core.read_model(str(model_file))
        except Exception as exc:
            raise ModelLoadError(f"OpenVINO could not read {model_file}: {error_summary(exc)}") from exc
        self.precision = precision
        self.config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
        }
        self.config.update(properties or {})  # e.g. DYNAMIC_QUANTIZATION_GROUP_SIZE from a weight-only manifest
        folder = cache_dir("openvino") if cache else None
        if folder is not None:
            self.config["CACHE_DIR"] = str(folder)
        ins = list(self._model.inputs)
        self.input_names = [i.get_any_name() for i in ins]
        self.output_names = [_name(o, k) for k, o in enumerate(self._model.outputs)]
        self.infos = [
            InputInfo(n, tuple(_dim(d) for d in i.get_partial_shape()), _dtype(i.get_element_type())) for n, i in zip(self.input_names, ins)
        ]
        stat = os.stat(model_file)
        self._key = (
            str(Path(model_file).resolve()),
            stat.st_mtime_ns,
            stat.st_size,
            threads,
            precision,
            tuple(sorted((properties or {}).items())),
        )
        self._requests: dict[tuple[tuple[int, ...], ...], Any] = {}

    def compiled(self, shapes: Sequence[Sequence[int]]) -> Any:
        """The ``CompiledModel`` for these concrete input shapes (compiled once, then reused)."""
        key = tuple(tuple(int(d) for d in s) for s in shapes)
        full = (*self._key, key)
        with _lock:
            hit = _compiled.get(full)
            if hit is not None:
                _compiled.move_to_end(full)
                return hit
        model = self._model
        if any(info.shape is None or None in info.shape or tuple(info.shape) != s for info, s in zip(self.infos, key)):
            model = self._model.clone()
            try:
                model.reshape({n: list(s) for n, s in zip(self.input_names, key)})
            except Exception as exc:
                raise DataError(
                    f"OpenVINO cannot reshape {self.model_file.name} to input shapes {[list(s) for s in key]}: {error_summary(exc)}"
                ) from exc
        try:
            compiled = _core().compile_model(model, "CPU", self.config)
        except Exception as exc:
            raise ModelLoadError(f"OpenVINO could not compile {self.model_file}: {error_summary(exc)}") from exc
        with _lock:
            _compiled[full] = compiled
            while len(_compiled) > _MAX_COMPILED:
                _compiled.popitem(last=False)
        return compiled

    def _request(self, arrays: Sequence[np.ndarray]) -> Any:
        key = tuple(tuple(a.shape) for a in arrays)
        req = self._requests.get(key)
        if req is None:
            req = self.compiled(key).create_infer_request()
            self._requests[key] = req
        return req

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        arrays = [np.ascontiguousarray(a) for a in arrays]
        req = self._request(arrays)
        result = req.infer(arrays)
        return [np.array(v, copy=True) for v in result.to_tuple()]

    def feed(self, arrays: Sequence[np.ndarray]) -> None:
        super().feed(arrays)
        req = self._request(self._fed)
        for k, a in enumerate(self._fed):
            req.set_input_tensor(k, _tensor(a))

    def run_fed(self) -> None:
        """Run on the fed inputs without copying outputs back."""
        self._request(self._fed).infer()

    def describe(self) -> str:
        return super().describe() + f", {self.precision} float parts"

    def close(self) -> None:
        self._requests.clear()


def _tensor(a: np.ndarray) -> Any:
    import openvino as ov

    return ov.Tensor(a)


def _name(port: Any, k: int) -> str:
    try:
        return str(port.get_any_name())
    except RuntimeError:  # an output without a tensor name
        return f"output_{k}"


def _dtype(t: Any) -> str | None:
    try:
        return str(np.dtype(t.to_dtype()))
    except Exception:  # dynamic or unusual element types
        return None


@dataclass(frozen=True)
class PrecisionReport:
    """Which layers a runtime executes in which precision (OpenVINO's execution graph).

    Attributes:
        runtime: ``"openvino"``.
        layers: ``(layer name, layer type, runtime precision)`` per executed compute layer.
    """

    runtime: str
    layers: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def int8_layers(self) -> list[tuple[str, str, str]]:
        """Layers whose runtime precision is 8-bit integer."""
        return [t for t in self.layers if t[2].lower() in _INT8]

    @property
    def int8_count(self) -> int:
        return len(self.int8_layers)

    def by_type(self) -> dict[str, tuple[int, int]]:
        """``{layer type: (INT8 count, total count)}``."""
        total = Counter(t[1] for t in self.layers)
        int8 = Counter(t[1] for t in self.int8_layers)
        return {k: (int8.get(k, 0), n) for k, n in total.most_common()}

    def summary(self) -> str:
        """One line, e.g. ``openvino INT8: Convolution 20/20, MatMul 1/1 (21 of 30 compute layers)``."""
        parts = [f"{k} {i}/{n}" for k, (i, n) in self.by_type().items() if i]
        head = ", ".join(parts) if parts else "no layer"
        return f"{self.runtime} INT8: {head} ({self.int8_count} of {len(self.layers)} compute layers)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "int8_layers": self.int8_count,
            "compute_layers": len(self.layers),
            "by_type": {k: {"int8": i, "total": n} for k, (i, n) in self.by_type().items()},
        }


def precision_report(runner: Any, input_shapes: Sequence[Sequence[int]] | None = None, *, threads: int = 1) -> PrecisionReport:
    """What OpenVINO runs in INT8: the execution graph's ``runtimePrecision`` per compute layer.

    Args:
        runner: an :class:`OpenVINORunner` or a model file (``.onnx`` / ``.pdmodel``), opened with ``threads``.
        input_shapes: concrete input shapes to compile for (default: the model's, batch 1 where dynamic).

    Raises:
        DataError: a dimension other than the batch is dynamic and no ``input_shapes`` were given.
        MissingExtraError: OpenVINO is not installed.

    Example:
        >>> precision_report("out/model.onnx", [[1, 3, 32, 32]]).int8_count   # doctest: +SKIP
        20
    """
    if not isinstance(runner, OpenVINORunner):
        from slim_core.runtime.base import open_runner

        runner = open_runner(runner, "openvino", threads=threads)
    if input_shapes is None:
        shapes = []
        for info in runner.infos:
            dims = list(info.shape or ())
            if any(d is None for d in dims[1:]):
                raise DataError(f"input {info.name!r} has dynamic sizes {dims}; pass input_shapes")
            shapes.append([1 if dims and dims[0] is None else dims[0], *dims[1:]])
        input_shapes = shapes
    compiled = runner.compiled(input_shapes)
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind in _NOT_COMPUTE:
            continue
        layers.append((op.get_friendly_name(), kind, info["runtimePrecision"].astype(str)))
    return PrecisionReport("openvino", layers)
