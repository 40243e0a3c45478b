"""Output agreement between two models: a Layer, an inference model, an ONNX model or a Predictor.

Example:
    >>> report = compare(model, "out/resnet18", data=[x])      # doctest: +SKIP
    >>> print(report)                                           # doctest: +SKIP
    max abs err 8.2e-06, mean abs err 1.1e-06, cosine 1.000000, top-1 agreement 100.00% over 8 samples
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slim_core import Batches, ConfigError, DataError, progress, require_paddle
from slim_deploy.predictor import Predictor

__all__ = ["CompareReport", "OutputAgreement", "compare", "as_runner", "layer_outputs"]


@dataclass(frozen=True)
class OutputAgreement:
    """Agreement of one output tensor across all samples."""

    name: str
    max_abs_err: float
    mean_abs_err: float
    cosine: float
    min_cosine: float
    top1_agreement: float | None
    max_abs_ref: float


@dataclass(frozen=True)
class CompareReport:
    """How closely two models agree on the same inputs.

    Attributes:
        max_abs_err: largest absolute difference over all outputs and samples.
        mean_abs_err: mean absolute difference over all output elements.
        cosine: mean per-sample cosine similarity (worst output).
        top1_agreement: share of samples whose argmax matches, for ``[N, C]`` outputs (else None).
        samples: number of samples compared.
        outputs: per-output details.
    """

    max_abs_err: float
    mean_abs_err: float
    cosine: float
    top1_agreement: float | None
    samples: int
    outputs: list[OutputAgreement] = field(default_factory=list)
    a: str = ""
    b: str = ""

    def within(self, tolerance: float, *, min_top1: float | None = None) -> bool:
        """True when every output's max abs error <= ``tolerance * max(1, max |reference|)`` (and top-1 >= ``min_top1``)."""
        ok = all(o.max_abs_err <= tolerance * max(1.0, o.max_abs_ref) for o in self.outputs)
        if min_top1 is not None and self.top1_agreement is not None:
            ok = ok and self.top1_agreement >= min_top1
        return ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_abs_err": self.max_abs_err,
            "mean_abs_err": self.mean_abs_err,
            "cosine": self.cosine,
            "top1_agreement": self.top1_agreement,
            "samples": self.samples,
            "a": self.a,
            "b": self.b,
        }

    def __str__(self) -> str:
        top1 = f", top-1 agreement {self.top1_agreement:.2%}" if self.top1_agreement is not None else ""
        return (
            f"max abs err {self.max_abs_err:.3g}, mean abs err {self.mean_abs_err:.3g}, cosine {self.cosine:.6f}{top1} "
            f"over {self.samples} samples"
        )


class _Acc:
    def __init__(self) -> None:
        self.max_err = 0.0
        self.sum_err = 0.0
        self.count = 0
        self.cos: list[np.ndarray] = []
        self.top1_hits = 0
        self.top1_n = 0
        self.max_ref = 0.0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        a64 = np.asarray(a, dtype="float64")
        b64 = np.asarray(b, dtype="float64")
        diff = np.abs(a64 - b64)
        self.max_err = max(self.max_err, float(diff.max()) if diff.size else 0.0)
        self.sum_err += float(diff.sum())
        self.count += diff.size
        self.max_ref = max(self.max_ref, float(np.abs(a64).max()) if a64.size else 0.0)
        n = a64.shape[0] if a64.ndim else 1
        fa, fb = a64.reshape(n, -1), b64.reshape(n, -1)
        na, nb = np.linalg.norm(fa, axis=1), np.linalg.norm(fb, axis=1)
        both_zero = (na == 0) & (nb == 0)
        cos = np.where(both_zero, 1.0, (fa * fb).sum(axis=1) / np.maximum(na * nb, 1e-30))
        self.cos.append(cos)
        if a64.ndim == 2 and a64.shape[1] > 1:
            self.top1_hits += int((a64.argmax(axis=1) == b64.argmax(axis=1)).sum())
            self.top1_n += n

    def result(self, name: str) -> OutputAgreement:
        cos = np.concatenate(self.cos) if self.cos else np.ones(1)
        return OutputAgreement(
            name=name,
            max_abs_err=self.max_err,
            mean_abs_err=self.sum_err / max(1, self.count),
            cosine=float(cos.mean()),
            min_cosine=float(cos.min()),
            top1_agreement=self.top1_hits / self.top1_n if self.top1_n else None,
            max_abs_ref=self.max_ref,
        )


def _flatten(out: Any) -> list[np.ndarray]:
    if isinstance(out, dict):
        return [a for v in out.values() for a in _flatten(v)]
    if isinstance(out, (list, tuple)):
        return [a for v in out for a in _flatten(v)]
    if hasattr(out, "numpy"):
        return [np.asarray(out.numpy())]
    return [np.asarray(out)]


def layer_outputs(layer: Any, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run a dygraph Layer in eval mode without gradients; every output as numpy (its mode is restored)."""
    paddle = require_paddle()
    was_training = layer.training
    layer.eval()
    try:
        with paddle.no_grad():
            return _flatten(layer(*[paddle.to_tensor(a) for a in arrays]))
    finally:
        if was_training:
            layer.train()


def as_runner(
    model: Any, *, backend: str = "default", threads: int | None = None
) -> tuple[Callable[[list[np.ndarray]], list[np.ndarray]], str, list[str] | None]:
    """``(run(arrays) -> outputs, description, input names or None)`` for any comparable model."""
    paddle = require_paddle()
    if isinstance(model, Predictor):
        return model.run, f"{model.backend}:{model.path}", model.input_names
    if isinstance(model, (str, os.PathLike)):
        pred = Predictor(model, backend=backend, threads=threads)  # type: ignore[arg-type]
        return pred.run, f"{pred.backend}:{Path(model)}", pred.input_names
    if isinstance(model, paddle.nn.Layer):
        return (lambda arrays: layer_outputs(model, arrays)), type(model).__name__, None
    if callable(model):
        return (lambda arrays: _flatten(model(*arrays))), getattr(model, "__name__", type(model).__name__), None
    raise ConfigError(
        f"cannot compare a {type(model).__name__}: give a paddle.nn.Layer, a model path, an ONNX file, a Predictor or a callable"
    )


def compare(
    model_a: Any, model_b: Any, data: Any, *, backend: str = "default", threads: int | None = None, limit: int | None = None
) -> CompareReport:
    """Run two models on the same inputs and measure how closely their outputs agree.

    Args:
        model_a: the reference: a ``paddle.nn.Layer``, a path (export directory,
            Paddle inference model, ``.onnx`` file), a :class:`Predictor` or a callable.
        model_b: the model under test, same choices.
        data: batches of inputs, anything :class:`slim_core.Batches` accepts (an array,
            a list of arrays or ``(x, label)`` tuples, a DataLoader, ...).
        backend: runtime for paths (see :class:`Predictor`).
        threads: CPU threads for paths.
        limit: compare at most this many batches.

    Returns:
        A :class:`CompareReport` (max/mean absolute error, cosine, top-1 agreement).

    Raises:
        DataError: empty or malformed data, or the two models give different numbers/shapes of outputs.

    Example:
        >>> r = compare(model, "out/model", [x])                  # doctest: +SKIP
        >>> assert r.within(1e-4)                                 # doctest: +SKIP
    """
    run_a, name_a, names_a = as_runner(model_a, backend=backend, threads=threads)
    run_b, name_b, names_b = as_runner(model_b, backend=backend, threads=threads)
    names = names_a or names_b
    accs: list[_Acc] = []
    samples = 0
    for batch in progress(Batches(data, names, limit=limit), desc="compare", total=limit):
        arrays = list(batch.values())
        outs_a, outs_b = run_a(arrays), run_b(arrays)
        if len(outs_a) != len(outs_b):
            raise DataError(f"{name_a} returns {len(outs_a)} output(s) but {name_b} returns {len(outs_b)}")
        if not accs:
            accs = [_Acc() for _ in outs_a]
        for i, (a, b) in enumerate(zip(outs_a, outs_b)):
            if np.shape(a) != np.shape(b):
                raise DataError(f"output {i} has shape {list(np.shape(a))} from {name_a} but {list(np.shape(b))} from {name_b}")
            accs[i].add(a, b)
        samples += arrays[0].shape[0] if arrays and arrays[0].ndim else 1
    outputs = [acc.result(f"output_{i}") for i, acc in enumerate(accs)]
    top1 = next((o.top1_agreement for o in outputs if o.top1_agreement is not None), None)
    total = sum(acc.count for acc in accs)
    return CompareReport(
        max_abs_err=max(o.max_abs_err for o in outputs),
        mean_abs_err=sum(acc.sum_err for acc in accs) / max(1, total),
        cosine=min(o.cosine for o in outputs),
        top1_agreement=top1,
        samples=samples,
        outputs=outputs,
        a=name_a,
        b=name_b,
    )
