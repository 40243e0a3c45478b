"""Measured latency of an exported model on each runtime and batch size, side by side.

Example:
    >>> report = benchmark("out/resnet18", batch_sizes=(1, 16), threads=2)   # doctest: +SKIP
    >>> print(report.to_markdown())                                           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slim_analysis.latency import LatencyStats, measure, stats_of
from slim_core import ConfigError
from slim_deploy.manifest import locate_artifacts
from slim_deploy.predictor import Predictor

__all__ = ["benchmark", "BenchmarkReport", "BenchmarkRow"]


@dataclass(frozen=True)
class BenchmarkRow:
    """One measured configuration; ``latency`` is slim-analysis's ``LatencyStats`` (median, p10/p90, min, mean, std)."""

    format: str
    backend: str
    batch_size: int
    threads: int
    latency: LatencyStats

    @property
    def per_sample_ms(self) -> float:
        return self.latency.median_ms / self.batch_size


@dataclass
class BenchmarkReport:
    """Rows of :func:`benchmark`, with a markdown table relative to the first path per batch size."""

    path: str
    input_shape: list[int]
    rows: list[BenchmarkRow] = field(default_factory=list)

    def to_markdown(self) -> str:
        lines = [
            "| format | runtime | batch | threads | median ms | p90 ms | ms / sample | vs first |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        base: dict[int, float] = {}
        for r in self.rows:
            base.setdefault(r.batch_size, r.latency.median_ms)
            ratio = base[r.batch_size] / r.latency.median_ms if r.latency.median_ms else float("nan")
            lines.append(
                f"| {r.format} | {r.backend} | {r.batch_size} | {r.threads} | {r.latency.median_ms:.2f} | "
                f"{r.latency.p90_ms:.2f} | {r.per_sample_ms:.2f} | {ratio:.2f}x |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "input_shape": self.input_shape,
            "rows": [
                {"format": r.format, "backend": r.backend, "batch_size": r.batch_size, "threads": r.threads} | dataclasses.asdict(r.latency)
                for r in self.rows
            ],
        }


def _interleaved(preds: dict[str, Predictor], x: np.ndarray, warmup: int, repeat: int, max_seconds: float) -> list[LatencyStats]:
    """Time every predictor in rounds (one run each per round), so load from other processes hits all alike."""
    for pred in preds.values():
        measure(lambda p=pred: p.run([x]), warmup=warmup, repeat=1)
    times: list[list[float]] = [[] for _ in preds]
    start = time.perf_counter()
    for _ in range(max(1, repeat)):
        for i, pred in enumerate(preds.values()):
            times[i].append(measure(lambda p=pred: p.run([x]), warmup=0, repeat=1).median_ms)
        if time.perf_counter() - start > max_seconds * len(preds) and len(times[0]) >= 3:
            break
    return [stats_of(t, x.shape[0]) for t in times]


def benchmark(
    path: str | os.PathLike[str],
    input_shape: Sequence[int] | None = None,
    batch_sizes: Sequence[int] = (1,),
    threads: int | None = None,
    backends: Sequence[str] | None = None,
    *,
    warmup: int = 3,
    repeat: int = 20,
    max_seconds: float = 10.0,
) -> BenchmarkReport:
    """Latency of a model for each available format/runtime and batch size, measured in one run.

    Args:
        path: an export directory, Paddle inference model or ``.onnx`` file.
        input_shape: shape of one sample without the batch dimension (default: from the manifest).
        batch_sizes: batch sizes to time.
        threads: CPU threads per runtime.
        backends: formats to time, e.g. ``["paddle", "paddle-legacy", "onnx"]`` (default: every artifact present).
        warmup: untimed runs per configuration.
        repeat: timed runs per configuration (fewer when ``max_seconds`` is reached).
        max_seconds: time budget per configuration.

    The formats are timed in interleaved rounds (each runs once per round), so a
    load change on a shared machine affects all of them alike; compare ratios
    within one report.

    Returns:
        A :class:`BenchmarkReport`; :meth:`~BenchmarkReport.to_markdown` prints the table.

    Raises:
        ConfigError: unknown backend, bad batch sizes, or the input shape is unknown.

    Example:
        >>> print(benchmark("out/mbv2", batch_sizes=[1, 16], threads=2).to_markdown())   # doctest: +SKIP
    """
    arts, manifest = locate_artifacts(path)
    if not batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ConfigError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")
    formats = list(backends) if backends else list(arts)
    for f in formats:
        if f == "onnxruntime":
            f = "onnx"
        if f not in arts and not (f == "onnx" and any(a.runtime == "paddle" for a in arts.values())):
            raise ConfigError(f"{path} has no {f!r} model; present: {', '.join(arts)}")
    formats = ["onnx" if f == "onnxruntime" else f for f in formats]
    if input_shape is None:
        if manifest is None or len(manifest.inputs) != 1 or manifest.inputs[0].get("shape") is None:
            raise ConfigError("input_shape is required for a model without a single-input slim.json manifest")
        input_shape = [int(d) for d in manifest.inputs[0]["shape"][1:]]
        dtype = manifest.inputs[0]["dtype"]
    else:
        dtype = "float32"
    if any(d < 1 for d in input_shape):
        raise ConfigError(f"input_shape {list(input_shape)} has dynamic or non-positive sizes; give concrete sizes")
    rng = np.random.default_rng(0)
    report = BenchmarkReport(str(path), list(input_shape))
    preds = {}
    for f in formats:
        if f in arts:
            preds[f] = Predictor(path, backend="onnxruntime" if f == "onnx" else "paddle", format=f, threads=threads)
        else:  # ONNX Runtime on a converted copy of the Paddle model
            preds[f] = Predictor(path, backend="onnxruntime", threads=threads)
    for b in batch_sizes:
        x = rng.standard_normal([b, *input_shape]).astype(dtype)
        for stats, (f, pred) in zip(_interleaved(preds, x, warmup, repeat, max_seconds), preds.items()):
            report.rows.append(BenchmarkRow(f, pred.backend, b, pred.threads, stats))
    for pred in preds.values():
        pred.close()
    return report
