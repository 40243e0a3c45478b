"""Run exported models on Paddle Inference (oneDNN on CPU, INT8 when quantized) or ONNX Runtime.

Example:
    >>> run = Predictor("out/resnet18", threads=2)            # doctest: +SKIP
    >>> logits = run(images)                                   # doctest: +SKIP
    >>> run = Predictor("out/resnet18", backend="auto")       # doctest: +SKIP
    >>> print(run.describe())                                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from slim_analysis.latency import measure
from slim_core import ConfigError, DataError, ModelLoadError, check_array, require_paddle
from slim_core.config import check_choice
from slim_deploy._extras import available, require
from slim_deploy.errors import summarize
from slim_deploy.manifest import Artifact, has_quant_ops, locate_artifacts

__all__ = ["Predictor", "Backend", "InputInfo", "Candidate", "paddle_to_onnx"]

Backend = Literal["default", "auto", "paddle", "onnxruntime"]
BACKENDS = ("default", "auto", "paddle", "onnxruntime")

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


@dataclass(frozen=True)
class InputInfo:
    """A model input: name, shape (``None`` for dynamic or unknown sizes) and dtype (None when unknown)."""

    name: str
    shape: tuple[int | None, ...] | None
    dtype: str | None


@dataclass(frozen=True)
class Candidate:
    """One runtime path ``backend="auto"`` measured: its latency and agreement with the primary path."""

    format: str
    runtime: str
    median_ms: float | None
    max_abs_err: float | None
    equivalent: bool
    note: str = ""


def paddle_to_onnx(
    model_file: str | os.PathLike[str], params_file: str | os.PathLike[str], out_file: str | os.PathLike[str], *, opset: int = 13
) -> Path:
    """Convert a Paddle inference model (PIR ``.json`` or legacy ``.pdmodel``) to ONNX with paddle2onnx.

    Raises:
        MissingExtraError: paddle2onnx is not installed (install ``slim-deploy[onnx]``).
        ExportError: paddle2onnx refuses the model (its message is kept).
    """
    from slim_core import ExportError
    from slim_core.model_io import convert_to_pir

    p2o = require("paddle2onnx")
    model_file, params_file, out_file = Path(model_file), Path(params_file), Path(out_file)
    with tempfile.TemporaryDirectory(prefix="slim-p2o-") as tmp:
        if model_file.suffix == ".pdmodel":
            # convert through slim_core (checked) instead of paddle2onnx's own temp-dir translation
            prefix = convert_to_pir(model_file, Path(tmp) / "pir")
            model_file, params_file = Path(str(prefix) + ".json"), Path(str(prefix) + ".pdiparams")
        try:
            with _quiet_fds():
                p2o.export(
                    str(model_file),
                    str(params_file),
                    str(out_file),
                    opset_version=opset,
                    verbose=False,
                    enable_onnx_checker=True,
                    optimize_tool="None",  # the default ("polygraphy") pip-installs onnx_graphsurgeon at run time
                )
        except Exception as exc:
            first = summarize(exc)
            raise ExportError(f"paddle2onnx could not convert {model_file}: {first}") from exc
    if not out_file.is_file() or out_file.stat().st_size == 0:
        raise ExportError(f"paddle2onnx wrote no ONNX file for {model_file} (unsupported operators? run with verbose paddle2onnx to see)")
    import onnx

    from slim_deploy.onnx_fix import fix_concat_ranks

    model = onnx.load(str(out_file))
    if fix_concat_ranks(model):  # paddle2onnx 2.1 output that ONNX Runtime refuses (PP-OCR models)
        onnx.save(model, str(out_file))
    return out_file


@contextlib.contextmanager
def _quiet_fds() -> Any:
    """Silence C++ level stdout (paddle2onnx prints progress lines from C++)."""
    try:
        fd = os.dup(1)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            try:
                yield
            finally:
                os.dup2(fd, 1)
    finally:
        os.close(fd)


class _PaddleRunner:
    runtime = "paddle"

    def __init__(self, art: Artifact, threads: int, int8: bool) -> None:
        paddle = require_paddle()
        from paddle import inference

        assert art.params is not None
        config = inference.Config(str(art.model), str(art.params))
        config.enable_new_ir(art.format == "paddle")
        config.disable_gpu()
        config.disable_glog_info()
        config.set_cpu_math_library_num_threads(threads)
        self.onednn = bool(paddle.base.core.is_compiled_with_mkldnn())
        if self.onednn:
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(16)  # bounded cache of oneDNN primitives across input shapes
            if int8:
                config.enable_mkldnn_int8()
        try:
            self.pred = inference.create_predictor(config)
        except Exception as exc:
            first = summarize(exc)
            hint = " (Paddle Inference runs INT8 on CPU only from the legacy format: export with format='paddle-legacy')" if int8 else ""
            raise ModelLoadError(f"Paddle Inference could not load {art.model}: {first}{hint}") from exc
        self.input_names = list(self.pred.get_input_names())
        self.output_names = list(self.pred.get_output_names())
        self._in = [self.pred.get_input_handle(n) for n in self.input_names]
        self._out = [self.pred.get_output_handle(n) for n in self.output_names]

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        for h, a in zip(self._in, arrays):
            h.reshape(list(a.shape))
            h.copy_from_cpu(np.ascontiguousarray(a))
        self.pred.run()
        return [h.copy_to_cpu() for h in self._out]


class _OrtRunner:
    runtime = "onnxruntime"

    def __init__(self, art: Artifact, threads: int) -> None:
        ort = require("onnxruntime")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self.sess = ort.InferenceSession(str(art.model), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            first = summarize(exc)
            raise ModelLoadError(f"ONNX Runtime could not load {art.model}: {first}") from exc
        ins = self.sess.get_inputs()
        self.input_names = [i.name for i in ins]
        self.output_names = [o.name for o in self.sess.get_outputs()]
        self.infos = [
            InputInfo(i.name, tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape), _ORT_DTYPES.get(i.type)) for i in ins
        ]

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(self.sess.run(None, dict(zip(self.input_names, arrays))))


class Predictor:
    """Run an exported model on numpy arrays.

    Args:
        path: an export directory written by :func:`export` (with ``slim.json``), a
            Paddle inference model (prefix, file or directory; PIR or legacy) or an ``.onnx`` file.
        backend: ``"default"`` runs the primary artifact on its own runtime (Paddle
            Inference for Paddle formats, ONNX Runtime for ONNX); ``"paddle"`` or
            ``"onnxruntime"`` force a runtime (a Paddle model is converted to ONNX in a
            temporary directory for ONNX Runtime); ``"auto"`` times every path that is
            available (all artifacts, plus an ONNX conversion when the ``onnx`` extra is
            installed), keeps those whose outputs match the primary path within
            ``tolerance``, and picks the fastest. :attr:`selection` lists what was measured.
        threads: CPU threads (default: ``min(4, os.cpu_count())``).
        int8: ``"auto"`` enables Paddle Inference's oneDNN INT8 path when the manifest
            says the model is INT8 or the program holds quantize ops; True/False force it.
        format: run only this artifact of an export directory (``paddle``, ``paddle-legacy`` or ``onnx``).
        probe: example inputs for ``backend="auto"`` (default: random inputs of the manifest's shapes, batch 1).
        tolerance: agreement required for ``"auto"``: max abs error <= tolerance * max(1, max |reference|).

    Raises:
        ModelLoadError: missing or corrupt model files.
        ConfigError: unknown backend, or a backend that cannot run this model.
        MissingExtraError: ONNX Runtime / paddle2onnx needed but not installed.

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
        elif backend in ("paddle", "onnxruntime"):
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

    def _runner(self, art: Artifact, runtime: str) -> Any:
        runner = _PaddleRunner(art, self.threads, self.int8) if runtime == "paddle" else _OrtRunner(art, self.threads)
        runner.format = art.format
        return runner

    def _auto(self, probe: Sequence[np.ndarray] | None, tolerance: float) -> Any:
        paths: list[tuple[Artifact, str]] = [(a, a.runtime) for a in self.artifacts.values()]
        notes: dict[int, str] = {}
        if "onnx" not in self.artifacts and not self.int8:
            if available("paddle2onnx") and available("onnxruntime"):
                try:
                    paths.append((self._converted_onnx(), "onnxruntime"))
                    notes[len(paths) - 1] = "converted on the fly"
                except Exception as exc:  # a conversion failure only removes a candidate
                    self.selection.append(Candidate("onnx", "onnxruntime", None, None, False, f"conversion failed: {str(exc)[:200]}"))
        paths = [(a, r) for a, r in paths if r == "paddle" or available("onnxruntime")]
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
        from slim_deploy.spec import example_inputs

        if self.manifest is None:
            infos = getattr(runner, "infos", None)
            if not infos or any(i.shape is None or None in i.shape[1:] for i in infos):
                raise ConfigError("backend='auto' needs example inputs for a model without a slim.json manifest: pass probe=[array, ...]")
            shapes = [{"name": i.name, "shape": [-1 if d is None else d for d in i.shape], "dtype": i.dtype or "float32"} for i in infos]
        else:
            shapes = self.manifest.inputs
            if any(s.get("shape") is None for s in shapes):
                raise ConfigError(f"the manifest of {self.path} does not record input shapes: pass probe=[array, ...]")
        paddle = require_paddle()
        specs = [paddle.static.InputSpec([None if d == -1 else d for d in s["shape"]], s["dtype"], s["name"]) for s in shapes]
        return example_inputs(specs, batch=1)

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
            first = summarize(exc)
            shapes = ", ".join(f"{n}{list(a.shape)}" for n, a in zip(self.input_names, arrays))
            raise DataError(f"{self.backend} failed on inputs {shapes}: {first}") from exc

    def __call__(self, *arrays: Any) -> np.ndarray | list[np.ndarray]:
        """``predictor(x)`` or ``predictor(ids, mask)``: one array for single-output models, else a list."""
        outs = self.run(list(arrays))
        return outs[0] if len(outs) == 1 else outs

    def describe(self) -> str:
        """One line saying which runtime and format run, and for ``"auto"`` what was measured."""
        extra = ", oneDNN INT8" if self.int8 and self.backend == "paddle" else ""
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
        self._runner_obj = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __repr__(self) -> str:
        return f"Predictor({str(self.path)!r}, backend={self.backend!r}, format={self.format!r}, threads={self.threads}, int8={self.int8})"
