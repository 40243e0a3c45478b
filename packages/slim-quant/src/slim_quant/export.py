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
from slim_quant.calibrators import make_calibrator
from slim_quant.config import PTQConfig
from slim_quant.layers import quanted_layers
from slim_quant.paddle_int8 import (
    QUANT_OP_SLOTS,
    activation_vars,
    calibrate_program,
    find_sites,
    float_blocks,
    fuse_bias_reshapes,
    rewrite_program,
)
from slim_quant.ptq import calibration_batches, input_specs, run_model, set_mode

__all__ = ["export", "quantize_inference_model", "quantize_legacy_program", "ExportResult", "LatencyGuardWarning", "latency_check"]

Format = Literal["paddle", "onnx"]
LEGACY = ("model_legacy.pdmodel", "model_legacy.pdiparams")


class LatencyGuardWarning(UserWarning):
    """The INT8 model is not faster than FP32 on the measured backend."""


@dataclass
class ExportResult:
    """What :func:`export` / :func:`quantize_inference_model` wrote and measured.

    Attributes:
        path / formats / file_bytes: the export directory, its formats and file sizes.
        quantized_ops: ``"op_type:weight"`` of the quantized ops of the Paddle model.
        observed_tensors: activations given an observer pair (oneDNN INT8 ranges).
        latency_ms / agreement: the latency guard's timings and the outputs' agreement with the reference.
        skipped: per format, the weights of ops kept in float by :func:`quantize_inference_model`
            and why (``skip_layers``/``skip_types``, or ``max_metric_drop`` with the metric gain).
        metrics: with ``max_metric_drop``: ``"{format}_float"``, ``"{format}_int8_all_ops"`` (every op
            quantized) and ``"{format}_int8"`` (the exported model), measured by ``eval_fn`` on the runtime.
    """

    path: Path
    formats: list[str]
    quantized_ops: list[str] = field(default_factory=list)
    observed_tensors: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    file_bytes: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


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


def _fold_affine_blocks(program: Any, scope: Any, keep: set[str]) -> int:
    """Fold scalar ``elementwise_mul``/``elementwise_add`` parameters around a biased conv into its filter and bias.

    PP-LCNet (PP-OCR) follows every conv with a learnable affine block (``conv + bias -> *a + b -> hard_swish ->
    *c + d``); as separate ops they stop oneDNN from fusing the INT8 conv with its activation. ``conv -> *a + b``
    becomes ``conv(w * a, bias * a + b)``; ``*c + d -> conv`` without padding becomes ``conv(w * c, bias + d * sum(w))``.
    Exact in float. Filters in ``keep`` (int8 codes computed elsewhere) are left alone. Returns the folded convs.
    """
    block = program.global_block()
    pers = {v.name for v in program.list_vars() if v.persistable}
    uses: dict[str, int] = {}
    for op in block.ops:
        for v in op.input_arg_names:
            uses[v] = uses.get(v, 0) + 1

    def value(name: str) -> np.ndarray:
        return np.array(scope.find_var(name).get_tensor(), dtype="float64")

    def sole_consumer(var: str) -> Any:
        cons = [op for op in block.ops if var in op.input_arg_names]
        return cons[0] if len(cons) == 1 else None

    def scalar_op(op: Any, kind: str, var: str) -> str | None:
        """The size-1 parameter of ``elementwise_{kind}(var, param)``, or None."""
        if op is None or op.type != f"elementwise_{kind}":
            return None
        xs, ys = op.input("X"), op.input("Y")
        other = ys[0] if xs == [var] else (xs[0] if ys == [var] and kind == "mul" else None)
        if other is None or other not in pers or int(np.prod(block.var(other).shape)) != 1 or uses.get(other, 0) != 1:
            return None
        return other

    done = 0
    for conv in [op for op in block.ops if op.type in ("conv2d", "depthwise_conv2d")]:
        wname = conv.input("Filter")[0]
        if wname not in pers or wname in keep or uses.get(wname, 0) != 1:
            continue
        add = sole_consumer(conv.output("Output")[0])
        if add is None or add.type != "elementwise_add" or add.input("X") != conv.output("Output"):
            continue
        bname = add.input("Y")[0]
        if bname not in pers or uses.get(bname, 0) != 1 or list(block.var(bname).shape) != [block.var(wname).shape[0]]:
            continue
        w, b, changed = value(wname), value(bname), False
        out = add.output("Out")[0]
        mul = sole_consumer(out)
        a = scalar_op(mul, "mul", out)
        nxt = sole_consumer(mul.output("Out")[0]) if a is not None else None
        c = scalar_op(nxt, "add", mul.output("Out")[0]) if a is not None else None
        if a is not None and c is not None:
            w, b = w * value(a).item(), b * value(a).item() + value(c).item()
            add._rename_output(out, nxt.output("Out")[0])
            for op in (nxt, mul):
                block._remove_op(list(block.ops).index(op))
            changed = True
        pre_add = next((op for op in block.ops if conv.input("Input")[0] in op.output_arg_names), None)
        pads = list(conv.attr("paddings")) if conv.has_attr("paddings") else [1]
        if pre_add is not None and pre_add.type == "elementwise_add" and not any(pads) and conv.attr("padding_algorithm") != "SAME":
            src = pre_add.input("X")[0]
            d = scalar_op(pre_add, "add", src)
            pre_mul = next((op for op in block.ops if src in op.output_arg_names), None)
            act, cval = None, None
            if pre_mul is not None and pre_mul.type == "elementwise_mul":
                act = pre_mul.input("Y")[0] if pre_mul.input("X")[0] in pers else pre_mul.input("X")[0]
                cval = scalar_op(pre_mul, "mul", act)
            if d is not None and cval is not None and uses.get(src, 0) == 1 and uses.get(conv.input("Input")[0], 0) == 1:
                b = b + value(d).item() * w.reshape(w.shape[0], -1).sum(1)
                w = w * value(cval).item()
                conv._rename_input(conv.input("Input")[0], act)
                for op in (pre_add, pre_mul):
                    block._remove_op(list(block.ops).index(op))
                changed = True
        if changed:
            scope.var(wname).get_tensor().set(w.astype("float32"), paddle.CPUPlace())
            scope.var(bname).get_tensor().set(b.astype("float32"), paddle.CPUPlace())
            done += 1
    if done:
        program._sync_with_cpp()
    return done


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
    calibration: dict[str, Any] | None = None,
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
        calibration: a cache of the activation calibrators: filled on the first call, reused (no
            calibration run) when it is not empty, e.g. to build the same model with other skipped ops.

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
        _fold_affine_blocks(prog, scope, set(weight_codes or {}))
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
            cals = calibrate_program(run, batches, names, lambda: make_calibrator(calibrator, percentile=percentile))
            if calibration is not None:
                calibration.update(cals)
    thresholds = {n: c.threshold() for n, c in cals.items()}
    if only_weights is not None:
        sites = [s for s in sites if s.weight in only_weights]
    if skip_weights:
        sites = [s for s in sites if s.weight not in skip_weights]
    by_weight = act_thresholds or {}
    site_thr = {s.act: float(by_weight.get(s.weight, thresholds[s.act])) for s in sites}
    observed = dict(thresholds)
    kept = {s.op_index for s in sites}
    for i, op in enumerate(prog.global_block().ops):
        # oneDNN would run a float-kept conv/matmul (or an activation x activation matmul: attention) in INT8
        # from its neighbours' observer scales
        if op.type in QUANT_OP_SLOTS and i not in kept:
            for v in set(op.input_arg_names) | set(op.output_arg_names):
                observed.pop(v, None)
    with _legacy(scope):
        info = rewrite_program(
            prog,
            scope,
            sites,
            site_thr,
            weight_codes=weight_codes,
            observer_thresholds=observed,
            weight_method=weight_method,
            non_negative={n for n, c in cals.items() if c.non_negative},
        )
        feeds = [prog.global_block().var(n) for n in src.input_names]
        paddle.static.save_inference_model(str(out_prefix), feeds, src.fetch_targets, exe, program=prog, clip_extra=False)
    info["sites"] = [{"op": s.op_type, "weight": s.weight, "input": s.act} for s in sites]
    info["float_blocks"] = float_blocks(prog)
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
    formats = _check_formats(formats)
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


class _RuntimeBuilder:
    """Builds one format's INT8 model for any set of float-kept weights, calibrating once, and runs it.

    The artifacts the latency guard and the metric need are written once: the float reference
    (``fp32/`` legacy program for Paddle, ``fp32_onnx/model.onnx`` for ONNX Runtime).
    """

    def __init__(self, src: Any, fmt: str, batches: list[dict[str, np.ndarray]], config: PTQConfig, work: Path, threads: int) -> None:
        self.src, self.fmt, self.batches, self.config, self.work, self.threads = src, fmt, batches, config, work, threads
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
        kw = dict(calibrator=cfg.calibrator, percentile=cfg.percentile, skip_weights=skip, weight_method=cfg.weight_calibrator)
        self.builds += 1
        if self.fmt == "paddle":
            first = not (self.fp32_dir / LEGACY[0]).exists()
            return quantize_legacy_program(
                self.src.prefix,
                out_dir / "model_legacy",
                self.batches,
                float_out_prefix=self.fp32_dir / "model_legacy" if first else None,
                calibration=self.calibration,
                **kw,
            )
        from slim_quant.onnx_qdq import quantize_onnx_model

        return quantize_onnx_model(self.fp32_dir / "model.onnx", out_dir / "model.onnx", self.batches, calibration=self.calibration, **kw)

    def predictor(self, model_dir: Path, int8: bool = True) -> Any:
        from slim_deploy.predictor import Predictor

        backend = "paddle" if self.fmt == "paddle" else "onnxruntime"
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
    builder: _RuntimeBuilder, skip: set[str], eval_fn: Callable[[Any], float], config: PTQConfig
) -> tuple[set[str], dict[str, str], dict[str, float]]:
    """Keep the ops whose float weight recovers the most metric in float until the drop fits ``max_metric_drop``.

    Ops are ranked by the metric recovered when each alone is kept in float; the smallest prefix of that ranking
    that meets the target is found by bisection (a few builds instead of one per op).
    """
    from slim_core.progress import progress
    from slim_quant.ptq import _metric_drop

    target, hib = float(config.max_metric_drop), config.higher_is_better  # type: ignore[arg-type]
    candidates, base, full = builder.start(skip, eval_fn)
    metrics = {"float": base, "int8_all_ops": full}
    if _metric_drop(base, full, hib) <= target:
        metrics["int8"] = full
        return set(skip), {}, metrics
    gains = {w: -_metric_drop(full, builder.measure(eval_fn, skip | {w}), hib) for w in progress(candidates, desc="sensitivity")}
    ranked = sorted(gains, key=gains.__getitem__, reverse=True)
    seen: dict[int, float] = {0: full}

    def fits(k: int) -> bool:
        if k not in seen:
            seen[k] = builder.measure(eval_fn, skip | set(ranked[:k]))
        return _metric_drop(base, seen[k], hib) <= target

    lo, hi = 1, len(ranked)
    if not fits(hi):
        warnings.warn(
            f"max_metric_drop={target} not reached on {builder.fmt}: metric {seen[hi]:.4g} vs float {base:.4g} with every op kept in float",
            stacklevel=3,
        )
    else:
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    kept = ranked[:hi]
    metrics["int8"] = seen[hi]
    return set(skip) | set(kept), {w: f"max_metric_drop: metric gain {gains[w]:.4g} when kept in float" for w in kept}, metrics


def _config_skips(src: Any, config: PTQConfig, formats: Sequence[str]) -> set[str]:
    """Weights of the ops ``skip_layers`` / ``skip_types`` keep in float (validated against the program)."""
    prog = src.program
    if src.format != "legacy":
        if "paddle" in formats:
            raise ExportError(
                f"{src.model_file} is a PIR program; Paddle Inference runs INT8 on CPU only from the legacy format. "
                "Use formats=('onnx',) for this model, or quantize the dygraph Layer with quantize_() and export()"
            )
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
) -> ExportResult:
    """PTQ of an existing Paddle inference model into an INT8 export directory.

    With ``config.max_metric_drop`` and ``eval_fn``, each format's INT8 model is measured on its own
    runtime (Paddle Inference oneDNN, ONNX Runtime); when the metric drops by more than the target,
    every quantized op is ranked by the metric it recovers when kept in float (calibration is shared),
    and the most sensitive ops are kept in float until the drop fits. What was kept in float and the
    metrics go to :attr:`ExportResult.skipped` / :attr:`ExportResult.metrics` and to ``slim.json``.

    Args:
        path: the float inference model (prefix, file or directory). ``"paddle"`` output needs the
            legacy format (``.pdmodel``); ``"onnx"`` output also takes PIR (``.json``) models.
        config: a :class:`PTQConfig`. ``skip_layers`` names weight parameters (e.g. ``"conv2d_3.w_0"``)
            or op output tensors; ``skip_types`` names program op types (e.g. ``"matmul_v2"``).
            Reconstruction and bias correction need a dygraph model and are rejected here.
        calib_data: calibration batches (anything :class:`slim_core.Batches` takes).
        out_path: the export directory.
        formats / overwrite / latency_guard / threads: as in :func:`export`.
        eval_fn: ``eval_fn(predictor) -> float`` for ``max_metric_drop``: ``predictor`` is a
            :class:`slim_deploy.Predictor` (``predictor.run([x])``); the direction is ``config.higher_is_better``.
            It is called about twice per quantized op when the target is missed with every op quantized.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ConfigError: a bad config, unknown ``skip_layers``, ``max_metric_drop`` without ``eval_fn``.
        ExportError: a PIR model with ``"paddle"`` output, weights other than 8 bits, a failed export.
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
    out = check_writable(out_path, overwrite=overwrite)
    batches = calibration_batches(calib_data, src.input_names, config.calib_batches)
    skip_w = _config_skips(src, config, formats)
    prog = src.program
    names = src.input_names
    shapes = [list(prog.global_block().var(n).shape) if src.format == "legacy" else list(batches[0][n].shape) for n in names]
    inputs = [
        {"name": n, "shape": [-1 if (d is None or d < 0 or i == 0) else int(d) for i, d in enumerate(s)], "dtype": str(batches[0][n].dtype)}
        for n, s in zip(names, shapes)
    ]
    result = ExportResult(path=out, formats=formats)
    with tempfile.TemporaryDirectory(prefix="slim-quant-") as work, atomic_dir(out, overwrite=overwrite) as tmp:
        records: dict[str, Any] = {}
        for f in formats:
            builder = _RuntimeBuilder(src, f, batches, config, Path(work), threads)
            skip_f, reasons, metrics = set(skip_w), {}, {}
            if config.max_metric_drop is not None:
                skip_f, reasons, metrics = _control_metric_runtime(builder, skip_w, eval_fn, config)  # type: ignore[arg-type]
            info = builder.build(skip_f, tmp)
            result.skipped[f] = {w: reasons.get(w, "skip_layers / skip_types") for w in sorted(skip_f)}
            result.skipped[f].update(info.get("float_blocks", {}))  # control-flow bodies kept in float
            result.metrics.update({f"{f}_{k}": v for k, v in metrics.items()})
            if f == "paddle":
                result.quantized_ops = info["ops"]
                result.observed_tensors = len(info["observed"])
                records[f] = {
                    "quantized_ops": info["ops"],
                    "observed_tensors": len(info["observed"]),
                    "residual_relus_as_leaky": info["residual_relus_as_leaky"],
                }
            else:
                records[f] = info
            records[f].update(skipped_weights=result.skipped[f], metrics=metrics)
        ref = src.run({n: batches[0][n] for n in names})[0]
        _verify_and_measure(
            result,
            tmp,
            Path(work) / "fp32",
            Path(work),
            formats,
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
        _write_manifest(tmp, inputs, formats, comp, result, "float source model")
    for f in os.listdir(out):
        result.file_bytes[f] = (out / f).stat().st_size
    return result


def _op_output(prog: Any, index: int) -> set[str]:
    op = prog.global_block().ops[index]
    return set(op.output_arg_names)
