"""Export quantized models: INT8 Paddle (legacy program for oneDNN) and ONNX QDQ.

:func:`export` takes a model quantized by :func:`slim_quant.quantize_` (or by
QAT, as long as it carries ``QuantedLayer`` wrappers and a ``slim_quant_state``)
and writes an export directory in slim-deploy's layout:

- ``model_legacy.pdmodel`` + ``model_legacy.pdiparams``: the INT8 Paddle model,
  int8 weights on disk, run by Paddle Inference with oneDNN INT8;
- ``model.onnx``: the same quantization as ONNX QuantizeLinear/DequantizeLinear
  (u8 activations, s8 per-channel weights);
- ``slim.json``: slim-deploy's manifest, with what was quantized and skipped.

:func:`quantize_inference_model` does PTQ on an existing inference model file.

The program-level pieces (:func:`quantize_legacy_program`) are shared with QAT.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import paddle

from slim_core.atomic import atomic_dir, check_writable
from slim_core.errors import ConfigError, DataError, ExportError
from slim_core.model_io import load_inference_model, static_mode
from slim_core.registry import closest
from slim_quant.calibrators import make_calibrator
from slim_quant.config import PTQConfig
from slim_quant.layers import quanted_layers
from slim_quant.paddle_int8 import activation_vars, calibrate_program, find_sites, fuse_bias_reshapes, rewrite_program
from slim_quant.ptq import calibration_batches, input_specs, run_model, set_mode

__all__ = ["export", "quantize_inference_model", "quantize_legacy_program", "ExportResult", "LatencyGuardWarning", "latency_check"]

Format = Literal["paddle", "onnx"]
LEGACY = ("model_legacy.pdmodel", "model_legacy.pdiparams")


class LatencyGuardWarning(UserWarning):
    """The INT8 model is not faster than FP32 on the measured backend."""


@dataclass
class ExportResult:
    """What :func:`export` wrote and measured."""

    path: Path
    formats: list[str]
    quantized_ops: list[str] = field(default_factory=list)
    observed_tensors: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    file_bytes: dict[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def _legacy(scope: Any) -> Iterator[None]:
    with static_mode(), paddle.pir_utils.OldIrGuard(), paddle.static.scope_guard(scope):
        yield


def quantize_legacy_program(
    src_prefix: str | os.PathLike[str],
    out_prefix: str | os.PathLike[str],
    batches: Sequence[dict[str, np.ndarray]],
    *,
    calibrator: str = "percentile",
    percentile: float = 99.99,
    weight_codes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    act_thresholds: dict[str, float] | None = None,
    only_weights: set[str] | None = None,
    skip_weights: set[str] | None = None,
    weight_method: str = "abs_max",
    float_out_prefix: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Turn a float legacy inference model into the INT8 form oneDNN runs.

    Args:
        src_prefix: the float legacy model (``prefix.pdmodel`` + ``prefix.pdiparams``).
        out_prefix: where to write the INT8 model.
        batches: calibration feeds ``{input name: array}`` for the activation ranges.
        calibrator / percentile: the activation calibrator.
        weight_codes: int8 codes and per-channel thresholds by weight name (from the dygraph layers).
        act_thresholds: input thresholds by weight name (the quantized op's input), overriding calibration.
        only_weights: quantize only ops whose weight is in this set.
        skip_weights: never quantize ops with these weights.
        weight_method: per-channel threshold method for weights not in ``weight_codes``.
        float_out_prefix: also write the float program after the bias clean-up (the fair FP32 reference).

    Returns:
        The rewrite summary (quantized ops, observed tensors).
    """
    src = load_inference_model(src_prefix)
    if src.format != "legacy":
        raise ExportError(
            f"{src.model_file} is a PIR program; Paddle Inference runs INT8 on CPU only from the legacy format. "
            "Quantize the dygraph model with quantize_() and export(), or pass a legacy .pdmodel"
        )
    prog, scope, exe = src.program, src.scope, src.executor
    with _legacy(scope):
        fuse_bias_reshapes(prog)
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
        cals = calibrate_program(run, batches, names, lambda: make_calibrator(calibrator, percentile=percentile))
    thresholds = {n: c.threshold() for n, c in cals.items()}
    if only_weights is not None:
        sites = [s for s in sites if s.weight in only_weights]
    if skip_weights:
        sites = [s for s in sites if s.weight not in skip_weights]
    by_weight = act_thresholds or {}
    site_thr = {s.act: float(by_weight.get(s.weight, thresholds[s.act])) for s in sites}
    with _legacy(scope):
        info = rewrite_program(
            prog,
            scope,
            sites,
            site_thr,
            weight_codes=weight_codes,
            observer_thresholds=thresholds,
            weight_method=weight_method,
            non_negative={n for n, c in cals.items() if c.non_negative},
        )
        feeds = [prog.global_block().var(n) for n in src.input_names]
        paddle.static.save_inference_model(str(out_prefix), feeds, src.fetch_targets, exe, program=prog, clip_extra=False)
    info["sites"] = [{"op": s.op_type, "weight": s.weight, "input": s.act} for s in sites]
    return info


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
    fp32_dir: Path, int8_dir: Path, example: list[np.ndarray], *, backend: str = "paddle", threads: int = 2
) -> dict[str, float]:
    """Median latency (ms) of the FP32 and INT8 exports on ``backend``; warns with LatencyGuardWarning when INT8 is not faster."""
    from slim_deploy.predictor import Predictor

    fp = Predictor(fp32_dir, backend=backend, threads=threads, int8=False)  # type: ignore[arg-type]
    q = Predictor(int8_dir, backend=backend, threads=threads, int8=True)  # type: ignore[arg-type]
    t_fp = _time(lambda: fp.run(example))
    t_q = _time(lambda: q.run(example))
    fp.close()
    q.close()
    if t_q >= 0.95 * t_fp:
        warnings.warn(
            f"INT8 model is NOT faster than FP32 on {backend}: {t_q:.2f} ms vs {t_fp:.2f} ms per batch of {example[0].shape[0]} "
            "(tiny models are dominated by overhead; check which layers were skipped)",
            LatencyGuardWarning,
            stacklevel=3,
        )
    return {f"{backend}_fp32": t_fp, f"{backend}_int8": t_q}


def _save_fp32_legacy(model: Any, prefix: Path, specs: list[Any]) -> None:
    set_mode(model, "float")
    try:
        with paddle.pir_utils.OldIrGuard():
            paddle.jit.save(model, str(prefix), input_spec=specs)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"could not export {type(model).__name__} as a legacy program: {first}") from exc
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
) -> ExportResult:
    """Write a quantized dygraph model as INT8 Paddle (oneDNN) and/or ONNX QDQ with a slim.json manifest.

    Args:
        model: a model returned by :func:`slim_quant.quantize_`.
        path: the export directory (created atomically).
        formats: ``"paddle"`` (legacy INT8 program, int8 weights) and/or ``"onnx"`` (QDQ).
        overwrite: replace an existing directory.
        latency_guard: time FP32 vs INT8 on each written backend (batch 1) and warn when INT8 is not faster.
        threads: CPU threads for the latency guard.

    Returns:
        An :class:`ExportResult` (files, quantized ops, agreement with the fake-quant layer, latency).

    Raises:
        ConfigError: the model was not quantized, or an unknown format.
        ExportError: the model cannot be exported with 8-bit codes, or the export fails.
        OutputExistsError: ``path`` exists and ``overwrite`` is False.

    Example:
        >>> res = export(qmodel, "out/resnet18_int8", formats=("paddle", "onnx"))   # doctest: +SKIP
        >>> res.latency_ms                                                           # doctest: +SKIP
        {'paddle_fp32': 18.3, 'paddle_int8': 5.2, ...}
    """
    state = getattr(model, "slim_quant_state", None)
    if state is None or not quanted_layers(model):
        raise ConfigError("model is not quantized: call slim_quant.quantize_(model, PTQConfig(), calib_data) first")
    formats = list(dict.fromkeys(formats))
    for f in formats:
        if f not in ("paddle", "onnx"):
            raise ConfigError(f"format {f!r} is not supported; use 'paddle' and/or 'onnx'")
    if not formats:
        raise ConfigError("formats is empty")
    cfg: PTQConfig = state.config
    if cfg.weight_bits != 8 or cfg.activation_bits != 8:
        raise ExportError(f"INT8 runtimes need 8-bit weights and activations; this model uses w{cfg.weight_bits}a{cfg.activation_bits}")
    out = check_writable(path, overwrite=overwrite)
    names = state.input_names
    batch0 = state.calib[0]
    specs = input_specs(batch0, names)
    layers = quanted_layers(model)
    weight_codes = {q.inner.weight.name: (q.w_codes, q.channel_thresholds()) for q in layers.values()}
    act_thr = {q.inner.weight.name: float(q.act_threshold) for q in layers.values()}
    result = ExportResult(path=out, formats=formats)
    example = [batch0[n][:1] for n in names]
    set_mode(model, "quant")
    with paddle.no_grad():
        ref = run_model(model, {n: batch0[n] for n in names}, names)
    ref_np = np.asarray((ref[0] if isinstance(ref, (list, tuple)) else ref).numpy())
    with tempfile.TemporaryDirectory(prefix="slim-quant-") as work, atomic_dir(out, overwrite=overwrite) as tmp:
        fp32_dir = Path(work) / "fp32"
        fp32_dir.mkdir()
        raw_dir = Path(work) / "fp32_raw"
        raw_dir.mkdir()
        _save_fp32_legacy(model, raw_dir / "model_legacy", specs)
        records: dict[str, Any] = {}
        if "paddle" in formats:
            info = quantize_legacy_program(
                raw_dir / "model_legacy",
                tmp / "model_legacy",
                state.calib,
                float_out_prefix=fp32_dir / "model_legacy",
                calibrator=cfg.calibrator,
                percentile=cfg.percentile,
                weight_codes=weight_codes,
                act_thresholds=act_thr,
                only_weights=set(weight_codes),
            )
            result.quantized_ops = info["ops"]
            result.observed_tensors = len(info["observed"])
            records["paddle"] = {
                "quantized_ops": info["ops"],
                "observed_tensors": len(info["observed"]),
                "residual_relus_as_leaky": info["residual_relus_as_leaky"],
            }
        if "onnx" in formats:
            from slim_quant.onnx_qdq import quantize_onnx_from_paddle

            onnx_info = quantize_onnx_from_paddle(
                raw_dir / "model_legacy",
                tmp / "model.onnx",
                state.calib,
                calibrator=cfg.calibrator,
                percentile=cfg.percentile,
                weight_codes=weight_codes,
                act_thresholds=act_thr,
                only_weights=set(weight_codes),
                fp32_onnx=Path(work) / "fp32_onnx" / "model.onnx",
            )
            records["onnx"] = onnx_info
        _verify_and_measure(result, tmp, fp32_dir, Path(work), formats, [batch0[n] for n in names], ref_np, example, latency_guard, threads)
        _write_manifest(
            tmp,
            _spec_dicts(specs),
            formats,
            {"quantization": {**state.to_dict(), "export": records}},
            result,
            "fake-quantized dygraph model",
        )
    for f in os.listdir(out):
        result.file_bytes[f] = (out / f).stat().st_size
    return result


def _verify_and_measure(
    result: ExportResult,
    tmp: Path,
    fp32_dir: Path,
    work: Path,
    formats: list[str],
    feed: list[np.ndarray],
    ref: np.ndarray | None,
    example: list[np.ndarray],
    latency_guard: bool,
    threads: int,
) -> None:
    from slim_deploy.predictor import Predictor

    for f in formats:
        sub = work / f"only_{f}"
        sub.mkdir()
        files = LEGACY if f == "paddle" else ("model.onnx",)
        for name in files:
            os.symlink(tmp / name, sub / name)
        backend = "paddle" if f == "paddle" else "onnxruntime"
        pred = Predictor(sub, backend=backend, threads=threads, int8=(f == "paddle"))  # type: ignore[arg-type]
        got = pred.run(feed)[0]
        pred.close()
        if ref is not None:
            err = float(np.abs(got - ref).max())
            scale = float(np.abs(ref).max()) or 1.0
            result.agreement[f"{f}_max_abs_err"] = err
            result.agreement[f"{f}_rel_err"] = float(np.linalg.norm(got - ref) / (np.linalg.norm(ref) or 1.0))
            result.agreement[f"{f}_max_rel_err"] = err / scale
            if got.ndim == 2 and got.shape[1] > 1:
                result.agreement[f"{f}_top1_agreement"] = float((got.argmax(1) == ref.argmax(1)).mean())
        if latency_guard:
            if f == "paddle":
                result.latency_ms.update(latency_check(fp32_dir, sub, example, backend="paddle", threads=threads))
            else:
                fp_onnx = work / "fp32_onnx"
                result.latency_ms.update(latency_check(fp_onnx, sub, example, backend="onnxruntime", threads=threads))


def _write_manifest(
    tmp: Path, inputs: list[dict[str, Any]], formats: list[str], compression: dict[str, Any], result: ExportResult, reference: str
) -> None:
    from slim_deploy.manifest import write_manifest

    verification = {"reference": reference, **result.agreement}
    if result.latency_ms:
        verification["latency_ms_batch1"] = dict(result.latency_ms)
    write_manifest(
        tmp,
        inputs,
        format="paddle-legacy" if "paddle" in formats else "onnx",
        compression=_jsonable(compression),
        int8=True,
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


def quantize_inference_model(
    path: str | os.PathLike[str],
    config: PTQConfig | None = None,
    calib_data: Any = None,
    out_path: str | os.PathLike[str] | None = None,
    *,
    formats: Sequence[Format] = ("paddle",),
    overwrite: bool = False,
    latency_guard: bool = True,
    threads: int = 2,
) -> ExportResult:
    """PTQ of an existing Paddle inference model into an INT8 export directory.

    Args:
        path: the float inference model (prefix, file or directory). ``"paddle"`` output needs the
            legacy format (``.pdmodel``); ``"onnx"`` output also takes PIR (``.json``) models.
        config: a :class:`PTQConfig`. ``skip_layers`` names weight parameters (e.g. ``"conv2d_3.w_0"``)
            or op output tensors; ``skip_types`` names program op types (e.g. ``"matmul_v2"``).
            Reconstruction, bias correction and BN folding need a dygraph model and are rejected here.
        calib_data: calibration batches (anything :class:`slim_core.Batches` takes).
        out_path: the export directory.
        formats / overwrite / latency_guard / threads: as in :func:`export`.

    Returns:
        An :class:`ExportResult`.

    Example:
        >>> quantize_inference_model("fp32/model", PTQConfig(calibrator="kl"), batches, "int8/")   # doctest: +SKIP
    """
    config = config or PTQConfig(fold_bn=False)
    if not isinstance(config, PTQConfig):
        raise ConfigError(f"config must be a PTQConfig, got {type(config).__name__}")
    if config.reconstruction is not None or config.bias_correction or config.max_metric_drop is not None:
        raise ConfigError("reconstruction, bias_correction and max_metric_drop need a dygraph model: use quantize_() on the Layer")
    if out_path is None:
        raise ConfigError("out_path is required")
    if config.weight_bits != 8:
        raise ExportError(f"INT8 runtimes need 8-bit weights; got weight_bits={config.weight_bits}")
    src = load_inference_model(path)
    out = check_writable(out_path, overwrite=overwrite)
    batches = calibration_batches(calib_data, src.input_names, config.calib_batches)
    prog = src.program
    if src.format == "legacy":
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
    else:
        skip_w = set()
        if "paddle" in formats:
            raise ExportError(
                f"{src.model_file} is a PIR program; Paddle Inference runs INT8 on CPU only from the legacy format. "
                "Use formats=('onnx',) for this model, or quantize the dygraph Layer with quantize_() and export()"
            )
    names = src.input_names
    shapes = [list(prog.global_block().var(n).shape) if src.format == "legacy" else list(batches[0][n].shape) for n in names]
    inputs = [
        {"name": n, "shape": [-1 if (d is None or d < 0 or i == 0) else int(d) for i, d in enumerate(s)], "dtype": str(batches[0][n].dtype)}
        for n, s in zip(names, shapes)
    ]
    result = ExportResult(path=out, formats=list(formats))
    with tempfile.TemporaryDirectory(prefix="slim-quant-") as work, atomic_dir(out, overwrite=overwrite) as tmp:
        fp32_dir = Path(work) / "fp32"
        fp32_dir.mkdir()
        records: dict[str, Any] = {}
        if "paddle" in formats:
            info = quantize_legacy_program(
                src.prefix,
                tmp / "model_legacy",
                batches,
                calibrator=config.calibrator,
                percentile=config.percentile,
                skip_weights=skip_w,
                weight_method=config.weight_calibrator,
                float_out_prefix=fp32_dir / "model_legacy",
            )
            result.quantized_ops = info["ops"]
            result.observed_tensors = len(info["observed"])
            records["paddle"] = {
                "quantized_ops": info["ops"],
                "observed_tensors": len(info["observed"]),
                "residual_relus_as_leaky": info["residual_relus_as_leaky"],
            }
        if "onnx" in formats:
            from slim_quant.onnx_qdq import quantize_onnx_from_paddle

            records["onnx"] = quantize_onnx_from_paddle(
                src.prefix,
                tmp / "model.onnx",
                batches,
                calibrator=config.calibrator,
                percentile=config.percentile,
                skip_weights=skip_w,
                weight_method=config.weight_calibrator,
                fp32_onnx=Path(work) / "fp32_onnx" / "model.onnx",
            )
        ref = src.run({n: batches[0][n] for n in names})[0]
        _verify_and_measure(
            result,
            tmp,
            fp32_dir,
            Path(work),
            list(formats),
            [batches[0][n] for n in names],
            ref,
            [batches[0][n][:1] for n in names],
            latency_guard,
            threads,
        )
        comp = {
            "quantization": {
                "method": "ptq",
                "source": str(src.model_file),
                "config": config.to_dict(),
                "skipped_weights": sorted(skip_w),
                "export": records,
            }
        }
        _write_manifest(tmp, inputs, list(formats), comp, result, "float source model")
    for f in os.listdir(out):
        result.file_bytes[f] = (out / f).stat().st_size
    return result


def _op_output(prog: Any, index: int) -> set[str]:
    op = prog.global_block().ops[index]
    return set(op.output_arg_names)
