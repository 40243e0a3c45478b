"""Export quantized models: INT8 Paddle (legacy program for oneDNN) and ONNX QDQ.

:func:`export` takes a model quantized by :func:`slim_quant.quantize_` (or by
QAT, as long as it carries ``QuantedLayer`` wrappers and a ``slim_quant_state``)
and writes an export directory in slim-deploy's layout. The float model is
exported through PIR first (every architecture Paddle 3 runs exports this way):

- ``model.onnx``: paddle2onnx's conversion of the PIR program with QuantizeLinear/
  DequantizeLinear inserted from the same :class:`~slim_quant.graph_passes.QuantPlan`
  (the fake-quant layers' int8 codes and input thresholds, by parameter name;
  u8 activations, s8 per-channel weights);
- ``model_legacy.pdmodel`` + ``model_legacy.pdiparams``: the INT8 Paddle model for
  Paddle Inference's oneDNN INT8 (int8 weights on disk), built only for the
  ``"paddle"`` format and only when the model traces into a legacy program
  (with :func:`slim_quant.legacy_trace.legacy_ops`); otherwise that format is
  skipped with a one-line reason and the other one is still written;
- ``slim.json``: slim-deploy's manifest, with what was quantized and skipped, the
  INT8 op count per format and the agreement with the reference and FP32.

:func:`quantize_inference_model` does PTQ on an existing inference model file.

The program-level pieces (:func:`quantize_legacy_program`) are shared with QAT.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import paddle

from slim_core.atomic import atomic_dir, check_writable
from slim_core.errors import ConfigError, DataError, ExportError
from slim_core.model_io import load_inference_model, static_mode
from slim_core.registry import closest
from slim_quant.config import PTQConfig
from slim_quant.graph_passes import QuantPlan, input_thresholds
from slim_quant.layers import quanted_layers
from slim_quant.paddle_int8 import (
    activation_vars,
    calibrate_program,
    find_sites,
    float_blocks,
    fold_affine_blocks,
    rewrite_program,
)
from slim_quant.ptq import calibration_batches, input_specs, run_model, set_mode

__all__ = [
    "export",
    "quantize_inference_model",
    "quantize_legacy_program",
    "ExportResult",
    "ExportQualityWarning",
    "LatencyGuardWarning",
    "latency_check",
    "REL_ERR_WARN",
]

Format = Literal["paddle", "onnx"]
LEGACY = ("model_legacy.pdmodel", "model_legacy.pdiparams")


class LatencyGuardWarning(UserWarning):
    """The INT8 model is not faster than FP32 on the measured backend."""


class ExportQualityWarning(UserWarning):
    """The export is not what "INT8" promises: no INT8 op, a file larger than FP32, or a large error vs FP32."""


#: relative output error (||int8 - fp32|| / ||fp32||, calibration inputs) above which the export warns
REL_ERR_WARN = 0.1
_RUNTIME_NAMES = {"paddle": "Paddle oneDNN", "onnx": "ONNX Runtime"}


@dataclass
class ExportResult:
    """What :func:`export` / :func:`quantize_inference_model` wrote and measured; the same keys for every format.

    Attributes:
        path: the export directory.
        formats: the formats written (``"paddle"``: legacy program for oneDNN INT8, ``"onnx"``: QDQ).
        skipped_formats: requested formats that were not written, with the one-line reason.
        quantized_ops: per format, ``"op_type:weight"`` of the ops that run in INT8.
        int8_ops: per format, how many ops run in INT8 (0: the file is float, a warning says so).
        qdq_tensors: per format, activations carrying a quantize/dequantize (or observer) pair.
        file_bytes: bytes of every written file; ``fp32_bytes``: per format, bytes of its FP32 source's model
            files (``.pdmodel`` + ``.pdiparams`` / ``.onnx``), which the INT8 ones are checked not to exceed.
        agreement: per format ``{f}_rel_err`` / ``{f}_max_abs_err`` / ``{f}_max_rel_err`` / ``{f}_cosine``
            (and ``{f}_top1_agreement`` for classifiers) against the reference (the fake-quant Layer, or the
            float model for :func:`quantize_inference_model`), and ``{f}_rel_err_fp32`` against FP32.
        latency_ms: the latency guard's timings.
        skipped: per format, the weights of ops kept in float and why, and the control-flow bodies kept in float
            (``"while (block 1)"``, ``"Loop (Loop.0)"``) with the reason.
        metrics: with ``max_metric_drop``: ``"{format}_float"``, ``"{format}_int8_all_ops"`` and ``"{format}_int8"``
            (``"{format}_int8_all_candidates_float"`` when the target was missed with every op INT8).
        runtimes: extra runtimes the ONNX model was also run on: ``{"openvino": {"measured": True,
            "int8_layers": n, "compute_layers": m, "by_type": ..., "summary": "..."}}`` from OpenVINO's execution
            graph (then also ``openvino_*`` agreement keys and ``openvino_fp32`` /
            ``openvino_int8`` latencies too), or ``{"measured": False, "reason": ...}`` when it is not installed.
    """

    path: Path
    formats: list[str]
    skipped_formats: dict[str, str] = field(default_factory=dict)
    quantized_ops: dict[str, list[str]] = field(default_factory=dict)
    int8_ops: dict[str, int] = field(default_factory=dict)
    qdq_tensors: dict[str, int] = field(default_factory=dict)
    file_bytes: dict[str, int] = field(default_factory=dict)
    fp32_bytes: dict[str, int] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    runtimes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, fmt: str, info: dict[str, Any]) -> dict[str, Any]:
        """Store one format's rewrite summary (paddle or onnx form) under the common keys; returns the slim.json record."""
        ops = list(info.get("ops", info.get("quantized_ops", [])))
        qdq = info["qdq_tensors"] if "qdq_tensors" in info else len(info.get("activations", [])) + len(info.get("observed", []))
        self.quantized_ops[fmt], self.int8_ops[fmt], self.qdq_tensors[fmt] = ops, len(ops), int(qdq)
        if info.get("float_blocks"):  # control-flow bodies kept in float, with the reason
            self.skipped.setdefault(fmt, {}).update(info["float_blocks"])
        rec = {"quantized_ops": ops, "int8_ops": len(ops), "qdq_tensors": int(qdq)}
        rec.update(
            {
                k: v
                for k, v in info.items()
                if k not in ("ops", "quantized_ops", "qdq_tensors", "activations", "observed", "weights", "sites")
            }
        )
        return rec


def _check_formats(formats: Sequence[str]) -> list[str]:
    formats = list(dict.fromkeys(formats))
    for f in formats:
        if f not in ("paddle", "onnx"):
            raise ConfigError(f"format {f!r} is not supported; use 'paddle' and/or 'onnx'")
    if not formats:
        raise ConfigError("formats is empty")
    return formats


@contextlib.contextmanager
def _legacy(scope: Any) -> Iterator[None]:
    with static_mode(), paddle.pir_utils.OldIrGuard(), paddle.static.scope_guard(scope):
        yield


def quantize_legacy_program(
    src_prefix: str | os.PathLike[str],
    out_prefix: str | os.PathLike[str],
    batches: Sequence[dict[str, np.ndarray]],
    plan: QuantPlan | None = None,
    *,
    float_out_prefix: str | os.PathLike[str] | None = None,
    calibration: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Turn a float legacy inference model into the INT8 form oneDNN runs.

    Args:
        src_prefix: the float legacy model (``prefix.pdmodel`` + ``prefix.pdiparams``).
        out_prefix: where to write the INT8 model.
        batches: calibration feeds ``{input name: array}`` for the activation ranges.
        plan: what to quantize and how (:class:`~slim_quant.graph_passes.QuantPlan`, weights by parameter
            name); ``options`` (its fields) build one when it is None.
        float_out_prefix: also write the float program after the bias clean-up (the fair FP32 reference).
        calibration: a cache of the activation calibrators: filled on the first call, reused (no
            calibration run) when it is not empty, e.g. to build the same model with other skipped ops.

    Returns:
        The rewrite summary (quantized ops, observed tensors).
    """
    plan = plan or QuantPlan(**options)
    src = load_inference_model(src_prefix)
    if src.format != "legacy":
        raise ExportError(
            f"{src.model_file} is a PIR program; Paddle Inference runs INT8 on CPU only from the legacy format. "
            "Quantize the dygraph model with quantize_() and export(), or pass a legacy .pdmodel"
        )
    prog, scope, exe = src.program, src.scope, src.executor
    with _legacy(scope):
        fold_affine_blocks(prog, scope, set(plan.weight_codes))
        if float_out_prefix is not None:
            feeds = [prog.global_block().var(n) for n in src.input_names]
            paddle.static.save_inference_model(str(float_out_prefix), feeds, src.fetch_targets, exe, program=prog.clone(), clip_extra=False)
        names = activation_vars(prog)
        sites = find_sites(prog)

        def run(feed: dict[str, np.ndarray], fetch: list[str]) -> list[np.ndarray]:
            return exe.run(prog, feed={k: feed[k] for k in src.input_names}, fetch_list=fetch)

        missing = [n for n in src.input_names if n not in batches[0]]
        if missing:
            raise DataError(f"calibration batches lack the model input(s) {missing}; the model takes {src.input_names}")
        if calibration:
            cals = calibration
        else:
            cals = calibrate_program(run, batches, names, plan.new_calibrator)
            if calibration is not None:
                calibration.update(cals)
    thresholds = {n: c.threshold() for n, c in cals.items()}
    sites = [s for s in sites if plan.selects(s.weight)]
    site_thr = {t: thr for t, (thr, _) in input_thresholds(plan, sites, thresholds).items()}
    with _legacy(scope):
        info = rewrite_program(
            prog,
            scope,
            sites,
            site_thr,
            plan=plan,
            observer_thresholds=thresholds,
            non_negative={n for n, c in cals.items() if c.non_negative},
        )
        _drop_callstacks(prog)
        feeds = [prog.global_block().var(n) for n in src.input_names]
        paddle.static.save_inference_model(str(out_prefix), feeds, src.fetch_targets, exe, program=prog, clip_extra=False)
    info["sites"] = [{"op": s.op_type, "weight": s.weight, "input": s.act} for s in sites]
    info["float_blocks"] = float_blocks(prog)
    return info


def _drop_callstacks(program: Any) -> None:
    """Empty every op's ``op_callstack`` (the Python stack of the trace, kept by ``clip_extra=False``).

    It is debug text only, and most of a legacy program file: 1.52 of the 1.62 MB of the PP-OCR direction
    classifier's ``.pdmodel``, so an INT8 model whose weights shrank 2.7x still came out larger than its source.
    """
    for op in program.global_block().ops:
        if op.has_attr("op_callstack"):
            op._set_attr("op_callstack", [])


def _time(fn: Any, repeat: int = 15) -> float:
    import time

    for _ in range(3):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1000.0)


def latency_check(
    fp32_dir: Path, int8_dir: Path, example: list[np.ndarray], *, backend: str = "paddle", threads: int = 2, warn: bool = True
) -> dict[str, float]:
    """Median latency (ms) of the FP32 and INT8 exports on ``backend``; warns with LatencyGuardWarning when INT8 is not
    faster (unless ``warn`` is False)."""
    from slim_deploy.predictor import Predictor

    fp = Predictor(fp32_dir, backend=backend, threads=threads, int8=False)  # type: ignore[arg-type]
    q = Predictor(int8_dir, backend=backend, threads=threads, int8=True)  # type: ignore[arg-type]
    t_fp = _time(lambda: fp.run(example))
    t_q = _time(lambda: q.run(example))
    fp.close()
    q.close()
    if warn and t_q >= 0.95 * t_fp:
        warnings.warn(
            f"INT8 model is NOT faster than FP32 on {backend}: {t_q:.2f} ms vs {t_fp:.2f} ms per batch of {example[0].shape[0]} "
            "(tiny models are dominated by overhead; check which layers were skipped)",
            LatencyGuardWarning,
            stacklevel=3,
        )
    return {f"{backend}_fp32": t_fp, f"{backend}_int8": t_q}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Paddle's dy2static errors put the cause last ("TypeError: (InvalidType) multiply(): ...")
    line = next((ln for ln in reversed(lines) if "Error" in ln.split(":")[0]), lines[0] if lines else type(exc).__name__)
    return line[:300]


def _save_fp32(model: Any, prefix: Path, specs: list[Any], *, legacy: bool) -> None:
    """Save the float model (every QuantedLayer in ``"float"`` mode) as a PIR program, or as a legacy one.

    The legacy trace runs inside :func:`slim_quant.legacy_trace.legacy_ops`, so models calling
    ``paddle.multiply``/``paddle.matmul``/``F.sigmoid``/``F.gelu`` (PaddleClas SE blocks, attention) trace too.
    """
    from slim_quant.legacy_trace import legacy_ops

    set_mode(model, "float")
    try:
        if legacy:
            with legacy_ops(), paddle.pir_utils.OldIrGuard():
                paddle.jit.save(model, str(prefix), input_spec=specs)
        else:
            paddle.jit.save(model, str(prefix), input_spec=specs)
    except Exception as exc:
        kind = "a legacy program (Paddle oneDNN INT8)" if legacy else "a PIR program"
        raise ExportError(f"could not export {type(model).__name__} as {kind}: {_first_line(exc)}") from exc
    finally:
        if not paddle.in_dynamic_mode():
            paddle.disable_static()
        set_mode(model, "quant")


def _spec_dicts(specs: list[Any]) -> list[dict[str, Any]]:
    return [
        {"name": s.name, "shape": [-1 if d is None else int(d) for d in s.shape], "dtype": str(s.dtype).replace("paddle.", "")}
        for s in specs
    ]


def export(
    model: Any,
    path: str | os.PathLike[str],
    *,
    formats: Sequence[Format] = ("paddle",),
    overwrite: bool = False,
    latency_guard: bool = True,
    threads: int = 2,
    onnx_target: str = "onnxruntime",
) -> ExportResult:
    """Write a quantized dygraph model as INT8 Paddle (oneDNN) and/or ONNX QDQ with a slim.json manifest.

    Args:
        model: a model returned by :func:`slim_quant.quantize_`.
        path: the export directory (created atomically).
        formats: ``"paddle"`` (legacy INT8 program, int8 weights) and/or ``"onnx"`` (QDQ).
        overwrite: replace an existing export directory (one with a ``slim.json``; never another directory).
        latency_guard: time FP32 vs INT8 on each written backend (batch 1) and warn when INT8 is not faster.
        threads: CPU threads for the latency guard.
        onnx_target: the runtime the ONNX QDQ layout is made for, ``"onnxruntime"`` (default) or ``"openvino"``
            (:attr:`~slim_quant.graph_passes.QuantPlan.target_runtime`: no output QDQ on quantized ops whose
            outputs are read in float; faster on OpenVINO for hardswish/SE nets, about 2x slower on ONNX Runtime,
            the same outputs on both). The latency guard warns only for the target runtime.

    Returns:
        An :class:`ExportResult` (files, INT8 ops per format, skipped formats, agreement with the
        fake-quant layer and with FP32, latency). :class:`ExportQualityWarning` says when a format was
        skipped, a format has no INT8 op, an INT8 weights file is larger than its FP32 source, or the
        output differs from FP32 by more than :data:`REL_ERR_WARN` (relative, calibration inputs).

    Raises:
        ConfigError: the model was not quantized, or an unknown format.
        ExportError: the model cannot be exported with 8-bit codes, or no requested format could be written.
        OutputExistsError: ``path`` exists and ``overwrite`` is False, or it is not a slim export directory.

    Example:
        >>> res = export(qmodel, "out/resnet18_int8", formats=("paddle", "onnx"))   # doctest: +SKIP
        >>> res.int8_ops, res.skipped_formats                                        # doctest: +SKIP
        ({'paddle': 21, 'onnx': 21}, {})
    """
    state = getattr(model, "slim_quant_state", None)
    if state is None or not quanted_layers(model):
        raise ConfigError("model is not quantized: call slim_quant.quantize_(model, PTQConfig(), calib_data) first")
    formats = _check_formats(formats)
    cfg: PTQConfig = state.config
    if cfg.weight_bits != 8 or cfg.activation_bits != 8:
        raise ExportError(f"INT8 runtimes need 8-bit weights and activations; this model uses w{cfg.weight_bits}a{cfg.activation_bits}")
    out = _check_out(path, overwrite)
    names = state.input_names
    batch0 = state.calib[0]
    specs = input_specs(batch0, names)
    layers = quanted_layers(model)
    weight_codes = {q.inner.weight.name: (q.w_codes, q.channel_thresholds()) for q in layers.values()}
    act_thr = {q.inner.weight.name: float(q.act_threshold) for q in layers.values()}
    plan = QuantPlan(
        calibrator=cfg.calibrator,
        percentile=cfg.percentile,
        weight_codes=weight_codes,
        act_thresholds=act_thr,
        only_weights=set(weight_codes),
        target_runtime=onnx_target,
    )
    result = ExportResult(path=out, formats=[])
    example = [batch0[n][:1] for n in names]
    refs = {}
    with paddle.no_grad():
        for mode in ("float", "quant"):
            set_mode(model, mode)
            y = run_model(model, {n: batch0[n] for n in names}, names)
            refs[mode] = np.asarray((y[0] if isinstance(y, (list, tuple)) else y).numpy())
    with tempfile.TemporaryDirectory(prefix="slim-quant-") as work_s, atomic_dir(out, overwrite=overwrite) as tmp:
        work = Path(work_s)
        records: dict[str, Any] = {}
        # PIR first: every architecture Paddle 3 can run exports this way; the ONNX model is built from it
        _save_fp32(model, work / "fp32_pir" / "model", specs, legacy=False)
        if "onnx" in formats:
            try:
                from slim_quant.onnx_qdq import quantize_onnx_from_paddle

                info = quantize_onnx_from_paddle(
                    work / "fp32_pir" / "model", tmp / "model.onnx", state.calib, fp32_onnx=work / "fp32_onnx" / "model.onnx", plan=plan
                )
                records["onnx"] = result.record("onnx", info)
            except ExportError as exc:
                result.skipped_formats["onnx"] = str(exc).splitlines()[0]
        if "paddle" in formats:
            # the legacy program only for Paddle Inference's oneDNN INT8, and only when Paddle can trace it
            try:
                _save_fp32(model, work / "fp32_raw" / "model_legacy", specs, legacy=True)
                info = quantize_legacy_program(
                    work / "fp32_raw" / "model_legacy",
                    tmp / "model_legacy",
                    state.calib,
                    float_out_prefix=work / "fp32" / "model_legacy",
                    plan=plan,
                )
                records["paddle"] = result.record("paddle", info)
            except ExportError as exc:
                result.skipped_formats["paddle"] = str(exc).splitlines()[0]
        result.formats = [f for f in formats if f in records]
        if not result.formats:
            raise ExportError("no format could be written: " + "; ".join(f"{f}: {r}" for f, r in result.skipped_formats.items()))
        _verify_and_measure(
            result,
            tmp,
            work,
            [batch0[n] for n in names],
            refs["quant"],
            refs["float"],
            example,
            latency_guard,
            threads,
            plan.target_runtime,
        )
        _check_quality(result)
        _write_manifest(
            tmp,
            _spec_dicts(specs),
            {"quantization": {**state.to_dict(), "export": records, "skipped_formats": dict(result.skipped_formats)}},
            result,
            "fake-quantized dygraph model",
        )
    for f in os.listdir(out):
        result.file_bytes[f] = (out / f).stat().st_size
    return result


def _check_out(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """``check_writable``, and with ``overwrite`` refuse to replace a non-empty directory slim did not write (no slim.json)."""
    out = check_writable(path, overwrite=overwrite)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "slim.json").is_file())):
        from slim_core.errors import OutputExistsError

        raise OutputExistsError(f"{out} exists and is not an export directory written by slim (no slim.json); refusing to replace it")
    return out


def _files(fmt: str) -> tuple[str, ...]:
    return LEGACY if fmt == "paddle" else ("model.onnx",)


def _fp32_dir(work: Path, fmt: str) -> Path:
    return work / ("fp32" if fmt == "paddle" else "fp32_onnx")


def _verify_and_measure(
    result: ExportResult,
    tmp: Path,
    work: Path,
    feed: list[np.ndarray],
    ref: np.ndarray | None,
    fp32_ref: np.ndarray | None,
    example: list[np.ndarray],
    latency_guard: bool,
    threads: int,
    onnx_target: str = "onnxruntime",
) -> None:
    """Run each written format on its runtime: agreement with ``ref`` and FP32, file sizes vs FP32, latency (an ONNX
    file laid out for OpenVINO is timed on ONNX Runtime too, without the not-faster warning)."""
    from slim_deploy.predictor import Predictor

    for f in result.formats:
        sub = work / f"only_{f}"
        sub.mkdir()
        for name in _files(f):
            os.symlink((tmp / name).resolve(), sub / name)  # absolute: tmp is relative when the output path is
        fp_dir = _fp32_dir(work, f)
        result.file_bytes.update({n: (tmp / n).stat().st_size for n in _files(f)})
        result.fp32_bytes[f] = sum((fp_dir / n).stat().st_size for n in _files(f))
        backend = "paddle" if f == "paddle" else "onnxruntime"
        pred = Predictor(sub, backend=backend, threads=threads, int8=(f == "paddle"))  # type: ignore[arg-type]
        got = pred.run(feed)[0]
        pred.close()
        _agreement(result, f, got, ref, fp32_ref)
        if latency_guard:
            warn = f != "onnx" or onnx_target == backend
            result.latency_ms.update(latency_check(fp_dir, sub, example, backend=backend, threads=threads, warn=warn))
        for rt in _ALSO_RUN.get(f, ()):
            got = _also_run(result, rt, sub / _files(f)[0], feed, example, threads)
            if got is not None:
                _agreement(result, rt, got, ref, fp32_ref)
                if latency_guard:
                    result.latency_ms.update(latency_check(fp_dir, sub, example, backend=rt, threads=threads))


def _agreement(result: ExportResult, key: str, got: np.ndarray, ref: np.ndarray | None, fp32_ref: np.ndarray | None) -> None:
    """``{key}_rel_err`` / ``_max_abs_err`` / ``_max_rel_err`` / ``_cosine`` (/ ``_top1_agreement``) vs ``ref``, ``_rel_err_fp32``."""
    if ref is not None:
        err = float(np.abs(got - ref).max())
        scale = float(np.abs(ref).max()) or 1.0
        result.agreement[f"{key}_max_abs_err"] = err
        result.agreement[f"{key}_rel_err"] = _rel(got, ref)
        result.agreement[f"{key}_max_rel_err"] = err / scale
        result.agreement[f"{key}_cosine"] = _cosine(got, ref)
        if got.ndim == 2 and got.shape[1] > 1:
            result.agreement[f"{key}_top1_agreement"] = float((got.argmax(1) == ref.argmax(1)).mean())
    if fp32_ref is not None:
        result.agreement[f"{key}_rel_err_fp32"] = _rel(got, fp32_ref)


#: runtimes each format is also verified on when installed (OpenVINO reads the QDQ ONNX model too)
_ALSO_RUN = {"onnx": ("openvino",)}


def _also_run(
    result: ExportResult, runtime: str, model_file: Path, feed: list[np.ndarray], example: list[np.ndarray], threads: int
) -> np.ndarray | None:
    """Run ``model_file`` on ``runtime`` too and record what its execution graph ran in INT8
    (:attr:`ExportResult.runtimes`); returns its output, or None (recorded as
    not measured, no error) when the runtime is not installed or cannot run the model (then with a warning)."""
    from slim_core.runtime import RUNTIMES, open_runner, precision_report, runtime_available

    if not runtime_available(runtime):
        extra = RUNTIMES[runtime].extra
        result.runtimes[runtime] = {"measured": False, "reason": f"{runtime} is not installed (pip install 'slim-quant[{extra}]')"}
        return None
    try:
        runner = open_runner(model_file, runtime, threads=threads, package="slim-quant")
        try:
            got = runner.run(feed)[0]
            report = precision_report(runner, [list(a.shape) for a in example])
        finally:
            runner.close()
    except Exception as exc:  # the export is still good for its own runtime: say why this one could not run it
        result.runtimes[runtime] = {"measured": False, "reason": f"{runtime} could not run it: {_first_line(exc)}"}
        warnings.warn(f"the {model_file.name} export does not run on {runtime}: {_first_line(exc)}", ExportQualityWarning, stacklevel=4)
        return None
    result.runtimes[runtime] = {"measured": True, "summary": report.summary(), **report.to_dict()}
    return got


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / (np.linalg.norm(b) or 1.0))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, "float64").ravel(), np.asarray(b, "float64").ravel()
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / den) if den else float(np.array_equal(a, b))


def _check_quality(result: ExportResult) -> None:
    """Say loudly what makes an export less than the INT8 model it claims to be, and which format is skipped."""
    for f, why in result.skipped_formats.items():
        warnings.warn(f"format {f!r} was not written: {why}", ExportQualityWarning, stacklevel=3)
    for f in result.formats:
        if result.int8_ops.get(f, 0) == 0:
            warnings.warn(
                f"the {f} export has NO INT8 op: every op was kept in float (skip_layers/skip_types/max_metric_drop); "
                "it is a float model in an INT8 export directory",
                ExportQualityWarning,
                stacklevel=3,
            )
        size, fp32 = sum(result.file_bytes.get(n, 0) for n in _files(f)), result.fp32_bytes.get(f, 0)
        if fp32 and size > fp32:
            warnings.warn(
                f"the {f} INT8 model files {'/'.join(_files(f))} ({size} bytes) are larger than their FP32 source ({fp32} bytes)",
                ExportQualityWarning,
                stacklevel=3,
            )
        rel = result.agreement.get(f"{f}_rel_err_fp32")
        if rel is not None and rel > REL_ERR_WARN:
            warnings.warn(
                f"the {f} INT8 output differs from FP32 by a relative error of {rel:.3f} on calibration inputs "
                f"(> {REL_ERR_WARN}); check the accuracy on real data, and skip sensitive layers or try another calibrator",
                ExportQualityWarning,
                stacklevel=3,
            )


def _write_manifest(tmp: Path, inputs: list[dict[str, Any]], compression: dict[str, Any], result: ExportResult, reference: str) -> None:
    from slim_deploy.manifest import write_manifest

    verification = {"reference": reference, **result.agreement, "int8_ops": dict(result.int8_ops)}
    if result.skipped_formats:
        verification["skipped_formats"] = dict(result.skipped_formats)
    if result.latency_ms:
        verification["latency_ms_batch1"] = dict(result.latency_ms)
    if result.runtimes:
        verification["runtimes"] = dict(result.runtimes)
    write_manifest(
        tmp,
        inputs,
        format="paddle-legacy" if "paddle" in result.formats else "onnx",
        compression=_jsonable(compression),
        int8=any(result.int8_ops.get(f, 0) > 0 for f in result.formats),
        verification=_jsonable(verification),
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


class _RuntimeBuilder:
    """Builds one format's INT8 model for any set of float-kept weights, calibrating once, and runs it.

    The artifacts the latency guard and the metric need are written once: the float reference
    (``fp32/`` legacy program for Paddle, ``fp32_onnx/model.onnx`` for ONNX Runtime).
    """

    def __init__(
        self,
        src: Any,
        fmt: str,
        batches: list[dict[str, np.ndarray]],
        config: PTQConfig,
        work: Path,
        threads: int,
        target: str = "onnxruntime",
    ) -> None:
        self.src, self.fmt, self.batches, self.config, self.work, self.threads = src, fmt, batches, config, work, threads
        self.target = target  # the runtime the ONNX layout is made for, and that measures its metric
        self.calibration: dict[str, Any] = {}
        self.fp32_dir = work / ("fp32" if fmt == "paddle" else "fp32_onnx")
        self.fp32_dir.mkdir(exist_ok=True)
        self.builds = 0
        if fmt == "onnx":
            from slim_deploy.predictor import paddle_to_onnx
            from slim_quant.onnx_qdq import _require_onnx

            _require_onnx()
            params = Path(str(src.prefix) + ".pdiparams")
            paddle_to_onnx(src.model_file, params, self.fp32_dir / "model.onnx")

    def build(self, skip: set[str], out_dir: Path) -> dict[str, Any]:
        """Write the INT8 model with the ops whose weight is in ``skip`` kept in float into ``out_dir``."""
        cfg = self.config
        plan = QuantPlan(
            calibrator=cfg.calibrator,
            percentile=cfg.percentile,
            skip_weights=skip,
            weight_method=cfg.weight_calibrator,
            target_runtime=self.target,
        )
        self.builds += 1
        if self.fmt == "paddle":
            first = not (self.fp32_dir / LEGACY[0]).exists()
            return quantize_legacy_program(
                self.src.prefix,
                out_dir / "model_legacy",
                self.batches,
                float_out_prefix=self.fp32_dir / "model_legacy" if first else None,
                calibration=self.calibration,
                plan=plan,
            )
        from slim_quant.onnx_qdq import quantize_onnx_model

        return quantize_onnx_model(self.fp32_dir / "model.onnx", out_dir / "model.onnx", self.batches, plan, calibration=self.calibration)

    def predictor(self, model_dir: Path, int8: bool = True) -> Any:
        from slim_deploy.predictor import Predictor

        backend = "paddle" if self.fmt == "paddle" else self.target
        return Predictor(model_dir, backend=backend, threads=self.threads, int8=int8 and self.fmt == "paddle")  # type: ignore[arg-type]

    def measure(self, metric: Callable[[Any], float], skip: set[str] | None) -> float:
        """``metric(predictor)`` on the float model (``skip=None``) or on the INT8 model keeping ``skip`` in float."""
        if skip is None:
            pred = self.predictor(self.fp32_dir, int8=False)
        else:
            trial = self.work / f"trial_{self.fmt}_{self.builds}"
            trial.mkdir()
            self.build(skip, trial)
            pred = self.predictor(trial)
        try:
            return float(metric(pred))
        finally:
            pred.close()
            if skip is not None:
                shutil.rmtree(trial, ignore_errors=True)

    def start(self, skip: set[str], metric: Callable[[Any], float]) -> tuple[dict[str, str], float, float]:
        """Quantize every op not in ``skip``: the op types by weight, the float metric and the INT8 metric."""
        full_dir = self.work / f"full_{self.fmt}"
        full_dir.mkdir()
        info = self.build(skip, full_dir)  # the first build also writes the float reference
        ops = info.get("ops", info.get("quantized_ops", []))
        base = self.measure(metric, None)
        pred = self.predictor(full_dir)
        try:
            full = float(metric(pred))
        finally:
            pred.close()
        return {o.split(":", 1)[1]: o.split(":", 1)[0] for o in ops}, base, full


def _control_metric_runtime(
    builder: _RuntimeBuilder, skip: set[str], eval_fn: Callable[[Any], float], config: PTQConfig, metrics: dict[str, float]
) -> tuple[set[str], dict[str, str]]:
    """Keep the ops whose float weight recovers the most metric in float until the drop fits ``max_metric_drop``.

    Ops are ranked by the metric recovered when each alone is kept in float; the smallest prefix of that ranking
    that meets the target is found by bisection (a few builds instead of one per op). ``metrics`` receives the
    measured figures (also when the runtime is refused).

    Raises:
        ExportError: the target is missed even with every candidate op kept in float (the runtime is refused,
            the figures are in the message).
    """
    from slim_core.progress import progress
    from slim_quant.ptq import _metric_drop

    target, hib = float(config.max_metric_drop), config.higher_is_better  # type: ignore[arg-type]
    candidates, base, full = builder.start(skip, eval_fn)
    metrics.update(float=base, int8_all_ops=full)
    if _metric_drop(base, full, hib) <= target:
        metrics["int8"] = full
        return set(skip), {}
    # every candidate kept in float first: when even that misses the target, the loss is the runtime's own
    # (oneDNN runs element-wise ops, activations and pooling in INT8 from the observer scales, symmetric s8 after
    # hardswish), no ranking of the convs can fix it, and the format is refused with the measured figures
    floor = builder.measure(eval_fn, skip | set(candidates))
    if _metric_drop(base, floor, hib) > target:
        metrics["int8_all_candidates_float"] = floor
        raise ExportError(
            f"{_RUNTIME_NAMES.get(builder.fmt, builder.fmt)} INT8 refused: metric {full:.4g} with every op INT8 and {floor:.4g} "
            f"with all {len(candidates)} conv/matmul ops kept in float, vs {base:.4g} in float (drop {_metric_drop(base, floor, hib):.4g} "
            f"> max_metric_drop={target:g}): the loss comes from the runtime's INT8 arithmetic, not from one layer"
        )
    gains = {w: -_metric_drop(full, builder.measure(eval_fn, skip | {w}), hib) for w in progress(candidates, desc="sensitivity")}
    ranked = sorted(gains, key=gains.__getitem__, reverse=True)
    seen: dict[int, float] = {0: full, len(ranked): floor}

    def fits(k: int) -> bool:
        if k not in seen:
            seen[k] = builder.measure(eval_fn, skip | set(ranked[:k]))
        return _metric_drop(base, seen[k], hib) <= target

    lo, hi = 1, len(ranked)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    kept = ranked[:hi]
    metrics["int8"] = seen[hi]
    return set(skip) | set(kept), {w: f"max_metric_drop: metric gain {gains[w]:.4g} when kept in float" for w in kept}


def _config_skips(src: Any, config: PTQConfig, formats: Sequence[str]) -> set[str]:
    """Weights of the ops ``skip_layers`` / ``skip_types`` keep in float (validated against the program)."""
    prog = src.program
    if src.format != "legacy":
        return set()
    sites = find_sites(prog)
    outputs = {o for op in prog.global_block().ops for o in op.output_arg_names}
    known = {s.weight for s in sites} | outputs
    for s in config.skip_layers:
        if s not in known:
            hint = closest(s, sorted({x.weight for x in sites}))
            did = f" (did you mean {hint!r}?)" if hint else ""
            raise ConfigError(f"skip_layers names {s!r}, which is neither a quantizable weight nor a tensor of {src.model_file}{did}")
    skip_w = {
        s.weight
        for s in sites
        if s.weight in config.skip_layers or s.op_type in config.skip_types or _op_output(prog, s.op_index) & set(config.skip_layers)
    }
    if not [s for s in sites if s.weight not in skip_w]:
        from slim_core.errors import UnsupportedOpError

        raise UnsupportedOpError(f"{src.model_file} has no quantizable op (conv2d, depthwise_conv2d, matmul/mul with a weight)")
    return skip_w


def _check_inference_config(config: PTQConfig | None, eval_fn: Any) -> PTQConfig:
    config = config or PTQConfig(fold_bn=False)
    if not isinstance(config, PTQConfig):
        raise ConfigError(f"config must be a PTQConfig, got {type(config).__name__}")
    if config.reconstruction is not None or config.bias_correction:
        raise ConfigError("reconstruction and bias_correction need a dygraph model: use quantize_() on the Layer")
    if eval_fn is not None and not callable(eval_fn):
        raise ConfigError("eval_fn must be a callable eval_fn(predictor) -> float")
    if config.max_metric_drop is not None and eval_fn is None:
        raise ConfigError(
            "PTQConfig.max_metric_drop needs eval_fn(predictor) -> metric: quantize_inference_model(..., eval_fn=...) "
            "measures it on the runtime of each format"
        )
    if config.weight_bits != 8:
        raise ExportError(f"INT8 runtimes need 8-bit weights; got weight_bits={config.weight_bits}")
    return config


def quantize_inference_model(
    path: str | os.PathLike[str],
    config: PTQConfig | None = None,
    calib_data: Any = None,
    out_path: str | os.PathLike[str] | None = None,
    *,
    formats: Sequence[Format] = ("paddle",),
    eval_fn: Callable[[Any], float] | None = None,
    overwrite: bool = False,
    latency_guard: bool = True,
    threads: int = 2,
    onnx_target: str = "onnxruntime",
) -> ExportResult:
    """PTQ of an existing Paddle inference model into an INT8 export directory.

    With ``config.max_metric_drop`` and ``eval_fn``, each format's INT8 model is measured on its own
    runtime (Paddle Inference oneDNN, ONNX Runtime); when the metric drops by more than the target,
    every quantized op is ranked by the metric it recovers when kept in float (calibration is shared),
    and the most sensitive ops are kept in float until the drop fits. What was kept in float and the
    metrics go to :attr:`ExportResult.skipped` / :attr:`ExportResult.metrics` and to ``slim.json``.
    A format whose metric still misses the target with every conv/matmul kept in float is refused: the loss is
    the runtime's own INT8 arithmetic (Paddle oneDNN on PP-OCRv4 recognition: symmetric s8 after hardswish and
    observer-scaled element-wise ops), so it goes to :attr:`ExportResult.skipped_formats` with the measured figures.

    Args:
        path: the float inference model (prefix, file or directory). ``"paddle"`` output needs the
            legacy format (``.pdmodel``); from a PIR (``.json``) model it is skipped with the reason in
            :attr:`ExportResult.skipped_formats` while ``"onnx"`` is written (an error when it is the only format).
        config: a :class:`PTQConfig`. ``skip_layers`` names weight parameters (e.g. ``"conv2d_3.w_0"``)
            or op output tensors; ``skip_types`` names program op types (e.g. ``"matmul_v2"``).
            Reconstruction and bias correction need a dygraph model and are rejected here.
        calib_data: calibration batches (anything :class:`slim_core.Batches` takes).
        out_path: the export directory.
        formats / overwrite / latency_guard / threads / onnx_target: as in :func:`export` (with ``max_metric_drop``,
            the ONNX model's metric is measured on ``onnx_target``).
        eval_fn: ``eval_fn(predictor) -> float`` for ``max_metric_drop``: ``predictor`` is a
            :class:`slim_deploy.Predictor` (``predictor.run([x])``); the direction is ``config.higher_is_better``.
            It is called about twice per quantized op when the target is missed with every op quantized.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ConfigError: a bad config, unknown ``skip_layers``, ``max_metric_drop`` without ``eval_fn``.
        ExportError: a PIR model with only ``"paddle"`` output, weights other than 8 bits, no format written.
        UnsupportedOpError: nothing to quantize.

    Example:
        >>> quantize_inference_model("fp32/model", PTQConfig(calibrator="kl"), batches, "int8/")   # doctest: +SKIP
        >>> res = quantize_inference_model("fp32/model", PTQConfig(max_metric_drop=0.5), batches, "int8/",
        ...                                formats=("onnx",), eval_fn=lambda p: accuracy(p))     # doctest: +SKIP
        >>> res.skipped["onnx"]                                                                   # doctest: +SKIP
        {'linear_85.w_0': 'max_metric_drop: metric gain 1.5 when kept in float'}
    """
    config = _check_inference_config(config, eval_fn)
    if out_path is None:
        raise ConfigError("out_path is required")
    formats = _check_formats(formats)
    src = load_inference_model(path)
    out = _check_out(out_path, overwrite)
    result = ExportResult(path=out, formats=[])
    if src.format != "legacy" and "paddle" in formats:
        result.skipped_formats["paddle"] = (
            f"{src.model_file} is a PIR program; Paddle Inference runs INT8 on CPU only from the legacy format "
            "(quantize the dygraph Layer with quantize_() and export() to get one)"
        )
        if formats == ["paddle"]:
            raise ExportError(result.skipped_formats["paddle"] + "; use formats=('onnx',) for this model")
    batches = calibration_batches(calib_data, src.input_names, config.calib_batches)
    skip_w = _config_skips(src, config, formats)
    prog = src.program
    names = src.input_names
    shapes = [list(prog.global_block().var(n).shape) if src.format == "legacy" else list(batches[0][n].shape) for n in names]
    inputs = [
        {"name": n, "shape": [-1 if (d is None or d < 0 or i == 0) else int(d) for i, d in enumerate(s)], "dtype": str(batches[0][n].dtype)}
        for n, s in zip(names, shapes)
    ]
    with tempfile.TemporaryDirectory(prefix="slim-quant-") as work, atomic_dir(out, overwrite=overwrite) as tmp:
        records: dict[str, Any] = {}
        for f in [f for f in formats if f not in result.skipped_formats]:
            skip_f, reasons, metrics = set(skip_w), {}, {}
            try:
                builder = _RuntimeBuilder(src, f, batches, config, Path(work), threads, onnx_target)
                if config.max_metric_drop is not None:
                    skip_f, reasons = _control_metric_runtime(builder, skip_w, eval_fn, config, metrics)  # type: ignore[arg-type]
                info = builder.build(skip_f, tmp)
            except ExportError as exc:
                result.skipped_formats[f] = str(exc).splitlines()[0]
                result.metrics.update({f"{f}_{k}": v for k, v in metrics.items()})
                continue
            result.skipped[f] = {w: reasons.get(w, "skip_layers / skip_types") for w in sorted(skip_f)}
            result.skipped[f].update(info.get("float_blocks", {}))  # control-flow bodies kept in float
            result.metrics.update({f"{f}_{k}": v for k, v in metrics.items()})
            records[f] = result.record(f, info)
            records[f].update(skipped_weights=result.skipped[f], metrics=metrics)
        result.formats = [f for f in formats if f in records]
        if not result.formats:
            raise ExportError("no format could be written: " + "; ".join(f"{f}: {r}" for f, r in result.skipped_formats.items()))
        ref = src.run({n: batches[0][n] for n in names})[0]
        feed = [batches[0][n] for n in names]
        _verify_and_measure(result, tmp, Path(work), feed, ref, ref, [x[:1] for x in feed], latency_guard, threads, onnx_target)
        _check_quality(result)
        comp = {
            "quantization": {
                "method": "ptq",
                "source": str(src.model_file),
                "config": config.to_dict(),
                "skipped_weights": sorted(skip_w),
                "export": records,
                "skipped_formats": dict(result.skipped_formats),
            }
        }
        _write_manifest(tmp, inputs, comp, result, "float source model")
    for f in os.listdir(out):
        result.file_bytes[f] = (out / f).stat().st_size
    return result


def _op_output(prog: Any, index: int) -> set[str]:
    op = prog.global_block().ops[index]
    return set(op.output_arg_names)
