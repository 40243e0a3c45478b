"""Measured latency through Paddle Inference (CPU, oneDNN), ONNX Runtime or OpenVINO.

The runtimes are slim-core's runners (:mod:`slim_core.runtime`). Nothing here
downloads or installs anything; a missing optional backend is a
:class:`~slim_core.errors.MissingExtraError` that names ``pip install 'slim-analysis[onnx]'``
(or ``[openvino]``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from slim_analysis._model import is_model_path, normalize_shapes
from slim_core import ConfigError, DataError, SlimConfig, check_range, require_paddle
from slim_core.model_io import resolve_model_path
from slim_core.runtime import Runner, open_runner, paddle_to_onnx
from slim_core.spec import normalize_input_spec

__all__ = [
    "LatencyConfig",
    "LatencyStats",
    "LatencyReport",
    "latency",
    "exported_model",
    "make_runner",
    "measure",
    "stats_of",
    "timed_calls",
    "time_runner",
]


@dataclass(frozen=True)
class LatencyConfig(SlimConfig):
    """How to measure.

    Attributes:
        batch_sizes: batch sizes to time (the first dim of ``input_shape`` is replaced).
        threads: CPU threads for the backend.
        backend: ``"paddle"`` (Paddle Inference, oneDNN on), ``"onnxruntime"`` or ``"openvino"``
            (the model is converted to ONNX for them; OpenVINO reads a legacy program directly).
        warmup: untimed runs first.
        repeats: timed runs per batch size.
        mkldnn: use oneDNN in Paddle Inference.
    """

    batch_sizes: tuple[int, ...] = (1,)
    threads: int = 1
    backend: Literal["paddle", "onnxruntime", "openvino"] = "paddle"
    warmup: int = 3
    repeats: int = 20
    mkldnn: bool = True

    def validate(self) -> None:
        if not self.batch_sizes:
            raise ConfigError("batch_sizes is empty; give at least one batch size such as (1,)")
        for b in self.batch_sizes:
            check_range("batch_sizes[]", b, 1)
        check_range("threads", self.threads, 1, 256)
        check_range("warmup", self.warmup, 0)
        check_range("repeats", self.repeats, 1)


@dataclass(frozen=True)
class LatencyStats:
    """Timings of one batch size, in milliseconds per run (one run = one batch)."""

    batch_size: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    std_ms: float
    runs: int

    @property
    def spread_ms(self) -> float:
        """p90 - p10."""
        return self.p90_ms - self.p10_ms

    @property
    def per_sample_ms(self) -> float:
        return self.median_ms / self.batch_size


@dataclass
class LatencyReport:
    """Result of :func:`latency`: one :class:`LatencyStats` per batch size."""

    backend: str
    threads: int
    input_shape: list[list[int]]
    results: dict[int, LatencyStats] = field(default_factory=dict)

    def median_ms(self, batch_size: int | None = None) -> float:
        """Median of the first (or the given) batch size."""
        key = batch_size if batch_size is not None else next(iter(self.results))
        return self.results[key].median_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "threads": self.threads,
            "input_shape": self.input_shape,
            "results": {str(b): dataclasses.asdict(s) for b, s in self.results.items()},
        }

    def to_markdown(self) -> str:
        lines = [
            f"Latency ({self.backend}, {self.threads} thread(s), input {self.input_shape})",
            "",
            "| batch | median ms | p10 | p90 | min | per sample ms | runs |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for b, s in self.results.items():
            lines.append(
                f"| {b} | {s.median_ms:.3f} | {s.p10_ms:.3f} | {s.p90_ms:.3f} | {s.min_ms:.3f} | {s.per_sample_ms:.3f} | {s.runs} |"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def stats_of(times_ms: Sequence[float], batch_size: int = 1) -> LatencyStats:
    """Summary statistics of run times in milliseconds (one run = one batch); shared with slim-deploy's benchmark."""
    ms = sorted(float(t) for t in times_ms)
    q10, q90 = np.percentile(ms, [10, 90])
    return LatencyStats(
        batch_size=batch_size,
        median_ms=float(statistics.median(ms)),
        p10_ms=float(q10),
        p90_ms=float(q90),
        min_ms=ms[0],
        mean_ms=float(statistics.fmean(ms)),
        std_ms=float(statistics.pstdev(ms)) if len(ms) > 1 else 0.0,
        runs=len(ms),
    )


def timed_calls(fn: Callable[[], object], *, warmup: int = 3, repeat: int = 20, max_seconds: float | None = None) -> list[float]:
    """Milliseconds of up to ``repeat`` calls of ``fn()`` after ``warmup`` untimed ones (stopping after ``max_seconds``)."""
    for _ in range(max(0, warmup)):
        fn()
    times = []
    start = time.perf_counter()
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
        if max_seconds is not None and time.perf_counter() - start > max_seconds and len(times) >= 3:
            break
    return times


def measure(
    fn: Callable[[], object], *, warmup: int = 3, repeat: int = 20, max_seconds: float | None = None, batch_size: int = 1
) -> LatencyStats:
    """Latency statistics of any callable (a predictor run, a session run, a Layer call).

    Example:
        >>> stats = measure(lambda: predictor.run([x]), warmup=3, repeat=20)   # doctest: +SKIP
        >>> stats.median_ms                                                    # doctest: +SKIP
    """
    return stats_of(timed_calls(fn, warmup=warmup, repeat=repeat, max_seconds=max_seconds), batch_size)


@contextlib.contextmanager
def exported_model(model: Any, input_shapes: list[list[int]]) -> Iterator[Path]:
    """Yield an inference-model prefix for ``model``: the path itself, or a temporary export of a Layer.

    The Layer is exported with a dynamic batch dimension, in eval mode, and left as it was.
    """
    paddle = require_paddle()
    if is_model_path(model):
        # its files are checked where a runtime or paddle2onnx opens them (open_runner, paddle_to_onnx)
        yield resolve_model_path(Path(model))[0]
        return
    if not isinstance(model, paddle.nn.Layer):
        raise DataError(f"expected a paddle.nn.Layer or an inference-model path, got {type(model).__name__}")
    specs = normalize_input_spec(list(input_shapes))
    was_training = model.training
    saved_funcs = dict(getattr(model, "_original_funcs", {}))
    forward = model.forward
    model.eval()
    with tempfile.TemporaryDirectory(prefix="slim_latency_") as tmp:
        prefix = Path(tmp) / "model"
        try:
            paddle.jit.save(model, str(prefix), input_spec=specs)
        except Exception as exc:
            raise DataError(
                f"could not export the model for timing with input shape {input_shapes}: {str(exc).splitlines()[0][:300]}"
            ) from exc
        finally:
            model.forward = forward
            if hasattr(model, "_original_funcs"):
                model._original_funcs.clear()
                model._original_funcs.update(saved_funcs)
            if was_training:
                model.train()
        yield prefix


def make_runner(prefix: Path, cfg: LatencyConfig) -> Runner:
    """A slim-core runner of the inference model at ``prefix`` on ``cfg.backend``.

    ONNX Runtime gets an ONNX conversion (made in a temporary folder and loaded, then
    removed); OpenVINO reads a legacy ``.pdmodel`` itself and gets the conversion for a
    PIR program.

    Raises:
        MissingExtraError: the runtime (or paddle2onnx for the conversion) is not installed.
        DataError: paddle2onnx cannot convert the model.
    """
    base, fmt = resolve_model_path(Path(prefix))
    model_file = Path(str(base) + (".json" if fmt == "pir" else ".pdmodel"))
    params_file = Path(str(base) + ".pdiparams")
    if cfg.backend == "paddle":
        return open_runner(model_file, "paddle", params_file=params_file, threads=cfg.threads, mkldnn=cfg.mkldnn, package="slim-analysis")
    if cfg.backend == "openvino" and model_file.suffix == ".pdmodel":
        return open_runner(model_file, "openvino", threads=cfg.threads, package="slim-analysis")
    from slim_core import ExportError

    with tempfile.TemporaryDirectory(prefix="slim_latency_onnx_") as tmp:
        try:
            onnx_file = paddle_to_onnx(model_file, params_file, Path(tmp) / "model.onnx", package="slim-analysis")
        except ExportError as exc:
            raise DataError(str(exc)) from exc
        return open_runner(onnx_file, cfg.backend, threads=cfg.threads, package="slim-analysis")


def time_runner(runner: Any, arrays: list[np.ndarray], warmup: int, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` runs of ``runner(arrays)`` after ``warmup`` untimed ones."""
    return [t / 1000.0 for t in timed_calls(lambda: runner(arrays), warmup=warmup, repeat=repeats)]


def latency(model: Any, input_shape: Any, config: LatencyConfig | None = None, **overrides: Any) -> LatencyReport:
    """Measure inference latency on this machine's CPU.

    Args:
        model: a ``paddle.nn.Layer`` (exported to a temporary inference model first) or an
            inference-model path (PIR or legacy).
        input_shape: ``[1, 3, 224, 224]`` or a list of shapes; the batch dim is replaced by each batch size.
        config: a :class:`LatencyConfig`; keyword overrides (``threads=2``, ``batch_sizes=(1, 8)``,
            ``backend="onnxruntime"`` or ``"openvino"``, ``warmup``, ``repeats``) are applied on top.

    Returns:
        A :class:`LatencyReport` with median, p10/p90, min, mean and std per batch size.

    Raises:
        ConfigError: bad settings.
        MissingExtraError: the ONNX Runtime / OpenVINO backend is not installed.
        DataError: the input shape does not fit the model.

    Example:
        >>> r = slim_analysis.latency(net, [1, 3, 224, 224], threads=2, batch_sizes=(1, 8))  # doctest: +SKIP
        >>> r.median_ms(1)                                                                     # doctest: +SKIP
    """
    cfg = config or LatencyConfig()
    if overrides:
        if "batch_sizes" in overrides and overrides["batch_sizes"] is not None:
            overrides["batch_sizes"] = tuple(overrides["batch_sizes"])
        cfg = LatencyConfig.from_dict({**cfg.to_dict(), **overrides})
    shapes = normalize_shapes(input_shape)
    if shapes is None:
        raise DataError("input_shape is required, e.g. [1, 3, 224, 224]")
    paddle = require_paddle()
    if isinstance(model, paddle.nn.Layer):
        from slim_analysis._model import graph_of

        graph_of(model, shapes)  # shape check with a clear DataError before exporting
    report = LatencyReport(backend=cfg.backend, threads=cfg.threads, input_shape=shapes)
    rng = np.random.default_rng(0)
    with exported_model(model, shapes) as prefix:
        runner = make_runner(prefix, cfg)
        for b in cfg.batch_sizes:
            arrays = [rng.standard_normal([b, *s[1:]]).astype("float32") for s in shapes]
            try:
                times = time_runner(runner, arrays, cfg.warmup, cfg.repeats)
            except Exception as exc:
                raise DataError(
                    f"the model did not run on input shapes {[list(a.shape) for a in arrays]}: {str(exc).strip().splitlines()[-1][:300]}"
                ) from exc
            report.results[b] = stats_of([t * 1000.0 for t in times], b)
    return report
