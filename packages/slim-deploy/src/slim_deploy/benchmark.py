"""Measured latency of an exported model on each runtime and batch size, side by side; the fastest is named.

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
from slim_core.runtime import runtime_available
from slim_deploy.manifest import FORMATS, Artifact, locate_artifacts
from slim_deploy.predictor import _READS, RUNTIME_NAMES, Predictor

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

    def fastest(self) -> dict[int, BenchmarkRow]:
        """The row with the lowest median per batch size."""
        best: dict[int, BenchmarkRow] = {}
        for r in self.rows:
            if r.batch_size not in best or r.latency.median_ms < best[r.batch_size].latency.median_ms:
                best[r.batch_size] = r
        return best

    def fastest_lines(self) -> list[str]:
        """``fastest at batch 1: onnx on openvino, 2.10 ms (1.80x the first row)`` per batch size."""
        first: dict[int, BenchmarkRow] = {}
        for r in self.rows:
            first.setdefault(r.batch_size, r)
        out = []
        for b, r in self.fastest().items():
            ratio = first[b].latency.median_ms / r.latency.median_ms if r.latency.median_ms else float("nan")
            out.append(f"fastest at batch {b}: {r.format} on {r.backend}, {r.latency.median_ms:.2f} ms ({ratio:.2f}x the first row)")
        return out

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
            "fastest": {
                str(b): {"format": r.format, "backend": r.backend, "median_ms": r.latency.median_ms} for b, r in self.fastest().items()
            },
        }


def _interleaved(preds: dict[Any, Predictor], x: np.ndarray, warmup: int, repeat: int, max_seconds: float) -> list[LatencyStats]:
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


def _paths(path: Any, arts: dict[str, Artifact], backends: Sequence[str] | None) -> list[tuple[str, str]]:
    """``(format, runtime)`` pairs to time; a format missing from ``arts`` but readable after conversion is ``onnx``."""
    has_paddle = any(a.runtime == "paddle" for a in arts.values())
    if not backends:
        return [(f, rt) for f in arts for rt in RUNTIME_NAMES if f in _READS[rt] and runtime_available(rt)]
    out: list[tuple[str, str]] = []
    for b in backends:
        fmt, _, rt = b.partition("/")
        if not rt:
            if fmt in RUNTIME_NAMES and fmt not in FORMATS:  # a runtime: the first artifact it reads, else a conversion
                rt = fmt
                fmt = next((f for f in arts if f in _READS[rt]), "onnx")
            else:
                rt = "onnxruntime" if fmt == "onnx" else "paddle"
        if fmt not in arts and not (fmt == "onnx" and has_paddle):
            raise ConfigError(f"{path} has no {fmt!r} model; present: {', '.join(arts)}")
        if rt not in RUNTIME_NAMES or fmt not in _READS[rt]:
            raise ConfigError(f"runtime {rt!r} cannot run the {fmt} model; runtimes: {', '.join(RUNTIME_NAMES)}")
        out.append((fmt, rt))
    return list(dict.fromkeys(out))


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
        backends: what to time: formats (``"paddle"``, ``"paddle-legacy"``, ``"onnx"``, each on its own
            runtime), runtimes (``"onnxruntime"``, ``"openvino"``) or ``"format/runtime"`` pairs
            (``"onnx/openvino"``). Default: every artifact on every installed runtime that reads it.
        warmup: untimed runs per configuration.
        repeat: timed runs per configuration (fewer when ``max_seconds`` is reached).
        max_seconds: time budget per configuration.

    The paths are timed in interleaved rounds (each runs once per round), so a
    load change on a shared machine affects all of them alike; compare ratios
    within one report. :meth:`BenchmarkReport.fastest` names the fastest per batch size.

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
    paths = _paths(path, arts, backends)
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
    preds: dict[tuple[str, str], Predictor] = {}
    for f, rt in paths:
        # a format missing from the export is an ONNX conversion of the Paddle model, made by the Predictor
        preds[(f, rt)] = Predictor(path, backend=rt, format=f if f in arts else None, threads=threads)
    for b in batch_sizes:
        x = rng.standard_normal([b, *input_shape]).astype(dtype)
        for stats, pred in zip(_interleaved(preds, x, warmup, repeat, max_seconds), preds.values()):
            report.rows.append(BenchmarkRow(pred.format, pred.backend, b, pred.threads, stats))
    for pred in preds.values():
        pred.close()
    return report
