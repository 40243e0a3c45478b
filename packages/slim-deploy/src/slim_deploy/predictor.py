"""Run exported models on Paddle Inference (oneDNN on CPU, INT8 when quantized), ONNX Runtime or OpenVINO.

The runtimes themselves are slim-core's runners (:mod:`slim_core.runtime`); this
module finds the artifacts of an export directory, converts a model for a runtime
that cannot read it, and for ``backend="auto"`` times every installed runtime.

Example:
    >>> run = Predictor("out/resnet18", threads=2)            # doctest: +SKIP
    >>> logits = run(images)                                   # doctest: +SKIP
    >>> run = Predictor("out/resnet18", backend="auto")       # doctest: +SKIP
    >>> print(run.describe())                                  # doctest: +SKIP
    >>> run = Predictor("out/resnet18_int8", backend="openvino")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from slim_analysis.latency import measure
from slim_core import ConfigError, DataError, check_array
from slim_core.config import check_choice
from slim_core.errors import error_summary
from slim_core.extras import available
from slim_core.runtime import InputInfo, Runner, open_runner, paddle_to_onnx, runtime_available
from slim_core.spec import example_inputs, specs_from_dicts
from slim_deploy.manifest import Artifact, has_quant_ops, locate_artifacts

__all__ = ["Predictor", "Backend", "InputInfo", "Candidate", "paddle_to_onnx", "BACKENDS", "RUNTIME_NAMES"]

Backend = Literal["default", "auto", "paddle", "onnxruntime", "openvino"]
RUNTIME_NAMES = ("paddle", "onnxruntime", "openvino")
BACKENDS = ("default", "auto", *RUNTIME_NAMES)
_READS = {"paddle": ("paddle", "paddle-legacy"), "onnxruntime": ("onnx",), "openvino": ("onnx", "paddle-legacy")}


@dataclass(frozen=True)
class Candidate:
    """One runtime path ``backend="auto"`` measured: its latency and agreement with the primary path."""

    format: str
    runtime: str
    median_ms: float | None
    max_abs_err: float | None
    equivalent: bool
    note: str = ""


class Predictor:
    """Run an exported model on numpy arrays.

    Args:
        path: an export directory written by :func:`export` (with ``slim.json``), a
            Paddle inference model (prefix, file or directory; PIR or legacy) or an ``.onnx`` file.
        backend: ``"default"`` runs the primary artifact on its own runtime (Paddle
            Inference for Paddle formats, ONNX Runtime for ONNX); ``"paddle"``,
            ``"onnxruntime"`` or ``"openvino"`` force a runtime (OpenVINO reads the ONNX or
            legacy Paddle model; a model the runtime cannot read is converted to ONNX in a
            temporary directory); ``"auto"`` times every path that is available (all
            artifacts on every installed runtime that reads them, plus an ONNX conversion
            when the ``onnx`` extra is installed), keeps those whose outputs match the
            primary path within ``tolerance``, and picks the fastest. :attr:`selection`
            lists what was measured.
        threads: CPU threads (default: ``min(4, os.cpu_count())``).
        int8: ``"auto"`` enables Paddle Inference's oneDNN INT8 path when the manifest
            says the model is INT8 or the program holds quantize ops; True/False force it.
        format: run only this artifact of an export directory (``paddle``, ``paddle-legacy`` or ``onnx``).
        probe: example inputs for ``backend="auto"`` (default: random inputs of the manifest's shapes, batch 1).
        tolerance: agreement required for ``"auto"``: max abs error <= tolerance * max(1, max |reference|).

    Raises:
        ModelLoadError: missing or corrupt model files.
        ConfigError: unknown backend, or a backend that cannot run this model.
        MissingExtraError: ONNX Runtime / OpenVINO / paddle2onnx needed but not installed
            (the message names ``pip install 'slim-deploy[onnx]'`` or ``'slim-deploy[openvino]'``).

    Example:
        >>> run = Predictor("out/mobilenet", backend="auto", threads=2)   # doctest: +SKIP
        >>> run.backend, run.format                                       # doctest: +SKIP
        ('onnxruntime', 'onnx')
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        backend: Backend = "default",
        threads: int | None = None,
        int8: bool | Literal["auto"] = "auto",
        *,
        format: str | None = None,
        probe: Sequence[np.ndarray] | None = None,
        tolerance: float = 1e-4,
    ) -> None:
        check_choice("backend", backend, BACKENDS)
        if int8 not in (True, False, "auto"):
            raise ConfigError(f"int8={int8!r} must be True, False or 'auto'")
        if threads is None:
            threads = min(4, os.cpu_count() or 1)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads={threads!r} must be a positive integer")
        self.path = Path(path)
        self.threads = threads
        self.artifacts, self.manifest = locate_artifacts(path)
        if format is not None:
            if format not in self.artifacts:
                raise ConfigError(f"{self.path} has no {format!r} model; present: {', '.join(self.artifacts)}")
            self.artifacts = {format: self.artifacts[format]}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.selection: list[Candidate] = []
        primary = next(iter(self.artifacts.values()))
        self.int8 = self._want_int8(primary, int8)
        if backend == "default":
            runner = self._runner(primary, primary.runtime)
        elif backend in RUNTIME_NAMES:
            runner = self._runner(self._artifact_for(backend), backend)
        else:
            runner = self._auto(probe, tolerance)
        self._runner_obj = runner
        self._format = runner.format
        self.backend: str = runner.runtime
        self.input_names: list[str] = list(runner.input_names)
        self.output_names: list[str] = list(runner.output_names)
        self.inputs: list[InputInfo] = self._input_infos(runner)

    # construction helpers ---------------------------------------------------
    def _want_int8(self, art: Artifact, int8: bool | str) -> bool:
        if int8 != "auto":
            return bool(int8)
        if self.manifest is not None:
            return bool(self.manifest.int8)
        return art.format != "onnx" and has_quant_ops(art.model)

    def _artifact_for(self, runtime: str) -> Artifact:
        for art in self.artifacts.values():
            if art.runtime == runtime:
                return art
        for art in self.artifacts.values():
            if art.format in _READS[runtime]:
                return art
        if runtime == "paddle":
            raise ConfigError(f"{self.path} holds only an ONNX model; Paddle Inference cannot run it (use backend='onnxruntime')")
        return self._converted_onnx()

    def _converted_onnx(self) -> Artifact:
        src = next(a for a in self.artifacts.values() if a.runtime == "paddle")
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="slim-predictor-")
        out = Path(self._tmp.name) / "model.onnx"
        if not out.is_file():
            assert src.params is not None
            paddle_to_onnx(src.model, src.params, out)
        return Artifact("onnx", out)

    def _runner(self, art: Artifact, runtime: str) -> Runner:
        properties = self._runtime_options(runtime) if runtime == "openvino" else {}
        options = {"properties": properties} if properties else {}
        return open_runner(
            art.model,
            runtime,
            params_file=art.params,
            threads=self.threads,
            int8=self.int8 and runtime == "paddle",
            package="slim-deploy",
            **options,
        )

    def _runtime_options(self, runtime: str) -> dict[str, Any]:
        """Runtime settings an export recorded in ``slim.json`` (``compression.<method>.runtime_options.<runtime>``)."""
        compression = (self.manifest.compression if self.manifest is not None else None) or {}
        found: dict[str, Any] = {}
        for section in compression.values():
            if isinstance(section, dict) and isinstance(section.get("runtime_options"), dict):
                found.update(section["runtime_options"].get(runtime) or {})
        return found

    def _auto(self, probe: Sequence[np.ndarray] | None, tolerance: float) -> Any:
        paths: list[tuple[Artifact, str]] = [(a, a.runtime) for a in self.artifacts.values()]
        notes: dict[int, str] = {}
        ov_reads = [a for a in self.artifacts.values() if a.format in _READS["openvino"]]
        if "onnx" not in self.artifacts and not self.int8:
            if available("paddle2onnx") and (runtime_available("onnxruntime") or runtime_available("openvino")):
                try:
                    converted = self._converted_onnx()
                    if runtime_available("onnxruntime"):
                        paths.append((converted, "onnxruntime"))
                        notes[len(paths) - 1] = "converted on the fly"
                    if not ov_reads:
                        ov_reads = [converted]
                except Exception as exc:  # a conversion failure (or no paddle2onnx) only removes a candidate
                    self.selection.append(Candidate("onnx", "onnxruntime", None, None, False, f"conversion failed: {str(exc)[:200]}"))
        if runtime_available("openvino"):
            for art in ov_reads:
                paths.append((art, "openvino"))
                if art.format == "onnx" and "onnx" not in self.artifacts:
                    notes[len(paths) - 1] = "converted on the fly"
        paths = [(a, r) for a, r in paths if runtime_available(r)]
        primary = self._runner(*paths[0])
        inputs = list(probe) if probe is not None else self._probe_inputs(primary)
        ref = primary.run(inputs)
        scale = max(1.0, max(float(np.abs(r).max()) for r in ref))
        ok: list[tuple[Any, Artifact, str, float, str]] = [(primary, paths[0][0], paths[0][1], 0.0, "primary")]
        for i, (art, runtime) in enumerate(paths[1:], start=1):
            try:
                cand = self._runner(art, runtime)
                out = cand.run(inputs)
            except Exception as exc:
                self.selection.append(Candidate(art.format, runtime, None, None, False, f"failed: {str(exc)[:200]}"))
                continue
            err = max(float(np.abs(np.asarray(a, "float64") - np.asarray(b, "float64")).max()) for a, b in zip(ref, out))
            if len(out) != len(ref) or err > tolerance * scale:
                self.selection.append(Candidate(art.format, runtime, None, err, False, f"outputs differ: max abs err {err:.3g}"))
                continue
            ok.append((cand, art, runtime, err, notes.get(i, "")))
        # time the candidates in interleaved rounds, so load from other processes hits all of them alike
        times = {i: measure(lambda c=c: c.run(inputs), warmup=3, repeat=1).median_ms for i, (c, *_rest) in enumerate(ok)}
        rounds: dict[int, list[float]] = {i: [t] for i, t in times.items()}
        for _ in range(9):
            for i, (c, *_rest) in enumerate(ok):
                rounds[i].append(measure(lambda c=c: c.run(inputs), warmup=0, repeat=1).median_ms)
        medians = {i: float(np.median(v)) for i, v in rounds.items()}
        for i, (_c, art, runtime, err, note) in enumerate(ok):
            self.selection.insert(i, Candidate(art.format, runtime, medians[i], err, True, note))
        best = min(medians, key=lambda i: medians[i])
        return ok[best][0]

    def _probe_inputs(self, runner: Any) -> list[np.ndarray]:
        if self.manifest is None:
            infos = getattr(runner, "infos", None)
            if not infos or any(i.shape is None or None in i.shape[1:] for i in infos):
                raise ConfigError("backend='auto' needs example inputs for a model without a slim.json manifest: pass probe=[array, ...]")
            shapes = [{"name": i.name, "shape": [-1 if d is None else d for d in i.shape], "dtype": i.dtype or "float32"} for i in infos]
        else:
            shapes = self.manifest.inputs
            if any(s.get("shape") is None for s in shapes):
                raise ConfigError(f"the manifest of {self.path} does not record input shapes: pass probe=[array, ...]")
        return example_inputs(specs_from_dicts(shapes), batch=1)

    def _input_infos(self, runner: Any) -> list[InputInfo]:
        if self.manifest is not None and [i["name"] for i in self.manifest.inputs] == self.input_names:
            return [
                InputInfo(i["name"], None if i.get("shape") is None else tuple(None if d == -1 else d for d in i["shape"]), i.get("dtype"))
                for i in self.manifest.inputs
            ]
        infos = getattr(runner, "infos", None)
        if infos:
            return list(infos)
        return [InputInfo(n, None, None) for n in self.input_names]

    # running ------------------------------------------------------------------
    @property
    def format(self) -> str:
        """Format of the artifact being run (``paddle``, ``paddle-legacy`` or ``onnx``)."""
        return str(self._format)

    def _prepare(self, arrays: Sequence[Any]) -> list[np.ndarray]:
        if len(arrays) != len(self.input_names):
            raise DataError(
                f"the model takes {len(self.input_names)} input(s) ({', '.join(self.input_names)}) but {len(arrays)} were given"
            )
        out = []
        for info, a in zip(self.inputs, arrays):
            arr = np.asarray(a.numpy() if hasattr(a, "numpy") and not isinstance(a, np.ndarray) else a)
            shape = (None, *info.shape[1:]) if info.shape else None  # any batch: a fixed one is run in chunks
            check_array(arr, info.name, shape=shape, dtype=info.dtype)
            if info.dtype is not None and arr.dtype != np.dtype(info.dtype):
                arr = arr.astype(info.dtype)  # float64 numpy defaults -> the model's float32
            out.append(arr)
        batches = {a.shape[0] for a in out if a.ndim}
        if len(batches) > 1:
            raise DataError(f"inputs disagree on the batch size: {sorted(batches)}")
        return out

    def _fixed_batch(self) -> int | None:
        shapes = [i.shape for i in self.inputs if i.shape]
        fixed = {s[0] for s in shapes if s and s[0] is not None}
        return fixed.pop() if len(fixed) == 1 else None

    def run(self, inputs: Sequence[Any] | dict[str, Any]) -> list[np.ndarray]:
        """Run on a list of arrays (input order) or a dict by input name; returns every output.

        A model exported with a fixed batch size is run in chunks of that size.
        """
        if isinstance(inputs, dict):
            missing = [n for n in self.input_names if n not in inputs]
            if missing:
                raise DataError(f"missing input(s) {', '.join(missing)}; the model takes {', '.join(self.input_names)}")
            inputs = [inputs[n] for n in self.input_names]
        arrays = self._prepare(list(inputs))
        fixed = self._fixed_batch()
        n = arrays[0].shape[0] if arrays and arrays[0].ndim else None
        if fixed is not None and n is not None and n != fixed:
            if n % fixed:
                raise DataError(f"the model was exported with a fixed batch of {fixed}; a batch of {n} is not a multiple of it")
            parts = [self._run_checked([a[i : i + fixed] for a in arrays]) for i in range(0, n, fixed)]
            return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
        return self._run_checked(arrays)

    def _run_checked(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return self._runner_obj.run(arrays)
        except Exception as exc:
            first = error_summary(exc)
            shapes = ", ".join(f"{n}{list(a.shape)}" for n, a in zip(self.input_names, arrays))
            raise DataError(f"{self.backend} failed on inputs {shapes}: {first}") from exc

    def __call__(self, *arrays: Any) -> np.ndarray | list[np.ndarray]:
        """``predictor(x)`` or ``predictor(ids, mask)``: one array for single-output models, else a list."""
        outs = self.run(list(arrays))
        return outs[0] if len(outs) == 1 else outs

    def describe(self) -> str:
        """One line saying which runtime and format run, and for ``"auto"`` what was measured."""
        extra = (
            ", oneDNN INT8"
            if self.int8 and self.backend == "paddle"
            else (", INT8 QDQ" if self.int8 and self.backend == "openvino" else "")
        )
        line = f"{self.backend} running the {self.format} model at {self.path} with {self.threads} thread(s){extra}"
        if self.selection:
            parts = []
            for c in self.selection:
                ms = f"{c.median_ms:.2f} ms" if c.median_ms is not None else "n/a"
                why = "" if c.equivalent else f" (rejected: {c.note or f'max abs err {c.max_abs_err:.3g}'})"
                parts.append(f"{c.format}/{c.runtime} {ms}{why}")
            line += "; measured: " + ", ".join(parts)
        return line

    def close(self) -> None:
        """Drop the runtime and any temporary conversion."""
        if self._runner_obj is not None:
            self._runner_obj.close()
        self._runner_obj = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __repr__(self) -> str:
        return f"Predictor({str(self.path)!r}, backend={self.backend!r}, format={self.format!r}, threads={self.threads}, int8={self.int8})"
