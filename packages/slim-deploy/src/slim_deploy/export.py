"""Export a dygraph Layer to deployable files, convert between formats, verify the result.

An export is a directory: the model file(s) of each requested format, and the
``slim.json`` manifest. It is written into a temporary sibling and renamed into
place only after every file is written and (optionally) verified, so a failure
leaves nothing behind.

Example:
    >>> result = export(model, "out/resnet18", [None, 3, 224, 224], format=["paddle", "onnx"])  # doctest: +SKIP
    >>> result.verification["onnx"].max_abs_err < 1e-4                                           # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slim_core import ConfigError, ExportError, atomic_dir, check_writable, require_paddle
from slim_core.config import check_choice
from slim_core.extras import require
from slim_core.model_io import convert_to_pir
from slim_core.spec import InputSpecLike, check_spec_matches_forward, example_inputs, normalize_input_spec, spec_to_dicts, specs_from_dicts
from slim_deploy.compare import CompareReport, compare, layer_outputs
from slim_deploy.errors import VerificationError, error_summary
from slim_deploy.manifest import FILES, FORMATS, Manifest, check_compression, locate_artifacts, read_manifest, write_manifest
from slim_deploy.predictor import Predictor, paddle_to_onnx

__all__ = ["export", "convert", "ExportResult"]


@dataclass
class ExportResult:
    """What :func:`export` / :func:`convert` wrote.

    Attributes:
        path: the export directory.
        formats: formats written, primary first.
        manifest: the manifest written as ``slim.json``.
        verification: per format, the comparison with the source (empty when not verified).
    """

    path: Path
    formats: list[str]
    manifest: Manifest
    verification: dict[str, CompareReport] = field(default_factory=dict)

    def files(self, format: str | None = None) -> list[Path]:
        """Model files of one format (default: the primary one)."""
        fmt = format or self.formats[0]
        model, params = FILES[fmt]
        return [self.path / model] + ([self.path / params] if params else [])


def _formats(format: str | Sequence[str]) -> list[str]:
    items = [format] if isinstance(format, str) else list(format)
    if not items:
        raise ConfigError(f"format must name at least one of {', '.join(FORMATS)}")
    for f in items:
        check_choice("format", f, FORMATS)
    return list(dict.fromkeys(items))


def _check_extras(formats: list[str], verify: bool) -> None:
    if "onnx" in formats:
        require("paddle2onnx", package="slim-deploy", extra="onnx", what="ONNX export")
        if verify:
            require("onnxruntime", package="slim-deploy", extra="onnx")


def _data_arrays(data: Any, n_inputs: int) -> list[np.ndarray]:
    from slim_core import to_numpy

    items = [data] if n_inputs == 1 and not isinstance(data, (list, tuple)) else list(data)
    if len(items) != n_inputs:
        raise ConfigError(f"verify_data holds {len(items)} array(s) but the model takes {n_inputs} input(s)")
    return [to_numpy(a) for a in items]


def _verify(
    directory: Path, formats: list[str], data: list[np.ndarray], reference: Any, source: str, tolerance: float, min_top1: float | None
) -> tuple[dict[str, CompareReport], list[str]]:
    reports = {}
    outputs: list[str] = []
    for fmt in formats:
        pred = Predictor(directory, backend="onnxruntime" if fmt == "onnx" else "paddle", format=fmt, int8="auto", threads=1)
        report = dataclasses.replace(compare(reference, pred, [tuple(data)]), a=source, b=f"{fmt} ({pred.backend})")
        outputs = outputs or list(pred.output_names)
        pred.close()
        reports[fmt] = report
        if not report.within(tolerance, min_top1=min_top1):
            top1 = f", top-1 agreement {report.top1_agreement:.2%}" if report.top1_agreement is not None else ""
            raise VerificationError(
                f"the exported {fmt} model differs from the source: max abs err {report.max_abs_err:.3g} "
                f"(tolerance {tolerance:g} x max(1, |output|)){top1}; nothing was written"
            )
    return reports, outputs


def export(
    model: Any,
    path: str | os.PathLike[str],
    input_spec: InputSpecLike,
    format: str | Sequence[str] = "paddle",
    *,
    compression: dict[str, Any] | None = None,
    verify: bool = True,
    verify_data: Any = None,
    tolerance: float = 1e-4,
    min_top1: float | None = None,
    dynamic_batch: bool = True,
    opset: int = 13,
    overwrite: bool = False,
) -> ExportResult:
    """Export a dygraph Layer as a deployable model directory with a ``slim.json`` manifest.

    Args:
        model: a ``paddle.nn.Layer`` (exported in eval mode; its mode is restored, its weights untouched).
        path: the output directory.
        input_spec: input shape(s) or ``InputSpec`` (see :func:`slim_core.spec.normalize_input_spec`).
        format: ``"paddle"`` (PIR ``model.json`` + ``model.pdiparams``, the default),
            ``"paddle-legacy"`` (``model_legacy.pdmodel``, which Paddle Inference's oneDNN
            INT8 path needs), ``"onnx"`` (``model.onnx`` via paddle2onnx, needs the
            ``slim-deploy[onnx]`` extra), or a list of them: all go into one directory and
            the first is the primary one.
        compression: what was applied to the model, recorded in the manifest (JSON-ready dict).
        verify: run the source and every exported format on the same inputs and fail
            (writing nothing) when they differ beyond ``tolerance``.
        verify_data: the inputs for verification (an array or one per input); default:
            random inputs of the spec's shapes with batch 2.
        tolerance: allowed max abs error, scaled by ``max(1, max |source output|)``.
        min_top1: also require this top-1 agreement (useful for quantized models).
        dynamic_batch: make the first dimension of every input dynamic.
        opset: ONNX opset for the ONNX export.
        overwrite: replace an existing ``path``.

    Returns:
        An :class:`ExportResult` with the manifest and the verification reports.

    Raises:
        ConfigError: unknown format, malformed input spec or one that does not match ``forward``, bad ``compression``.
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        MissingExtraError: ONNX requested without paddle2onnx / onnxruntime installed.
        ExportError: Paddle or paddle2onnx cannot export the model.
        VerificationError: the exported model's outputs differ from the source.

    Example:
        >>> import paddle
        >>> net = paddle.vision.models.resnet18(num_classes=10)           # doctest: +SKIP
        >>> r = export(net, "out/r18", [None, 3, 64, 64], format="onnx")   # doctest: +SKIP
        >>> print(r.verification["onnx"])                                  # doctest: +SKIP
    """
    paddle = require_paddle()
    formats = _formats(format)
    compression = check_compression(compression)
    if not isinstance(model, paddle.nn.Layer):
        raise ConfigError(f"export needs a paddle.nn.Layer, got {type(model).__name__}; to convert an inference model use convert()")
    specs = normalize_input_spec(input_spec, dynamic_batch=dynamic_batch)
    check_spec_matches_forward(model, specs)
    out = check_writable(path, overwrite=overwrite)
    _check_extras(formats, verify)
    data = _data_arrays(verify_data, len(specs)) if verify_data is not None else (example_inputs(specs, batch=2) if verify else None)
    was_training = model.training
    model.eval()
    try:
        reference = None
        if verify and data is not None:
            try:
                reference = layer_outputs(model, data)
            except Exception as exc:  # the spec does not fit the model: say so before writing anything
                shapes = [list(a.shape) for a in data]
                raise ExportError(
                    f"{type(model).__name__} could not export: it fails on inputs of shape {shapes}: {error_summary(exc)}"
                ) from exc
        with atomic_dir(out, overwrite=overwrite) as tmp:
            _save_layer(model, tmp, specs, formats, opset)
            inputs = spec_to_dicts(specs)
            manifest = write_manifest(tmp, inputs, format=formats[0], compression=compression)
            reports: dict[str, CompareReport] = {}
            if reference is not None and data is not None:
                reports, outputs = _verify(tmp, formats, data, lambda *arrays: reference, type(model).__name__, tolerance, min_top1)
                manifest = write_manifest(
                    tmp,
                    inputs,
                    format=formats[0],
                    outputs=outputs,
                    compression=compression,
                    int8=manifest.int8,
                    verification={f: r.to_dict() for f, r in reports.items()},
                )
    finally:
        if was_training:
            model.train()
    return ExportResult(path=out, formats=formats, manifest=manifest, verification=reports)


def _save_layer(model: Any, tmp: Path, specs: list[Any], formats: list[str], opset: int) -> None:
    paddle = require_paddle()
    shapes = [list(s.shape) for s in specs]
    try:
        if "paddle" in formats or "onnx" in formats:
            paddle.jit.save(model, str(tmp / "model"), input_spec=specs)
        if "paddle-legacy" in formats:
            with paddle.pir_utils.OldIrGuard():
                paddle.jit.save(model, str(tmp / "model_legacy"), input_spec=specs)
            info = tmp / "model_legacy.pdiparams.info"
            if info.exists():
                info.unlink()  # training-only metadata, not needed to run the model
    except Exception as exc:
        raise ExportError(f"Paddle could not export {type(model).__name__} with input spec {shapes}: {error_summary(exc)}") from exc
    finally:
        if not paddle.in_dynamic_mode():
            paddle.disable_static()
    if "onnx" in formats:
        paddle_to_onnx(tmp / "model.json", tmp / "model.pdiparams", tmp / "model.onnx", opset=opset)
        if "paddle" not in formats:
            for name in ("model.json", "model.pdiparams"):
                (tmp / name).unlink()


def convert(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    format: str = "paddle",
    *,
    verify: bool = True,
    verify_data: Any = None,
    tolerance: float = 1e-4,
    opset: int = 13,
    overwrite: bool = False,
) -> ExportResult:
    """Convert an existing inference model to another format (legacy -> PIR, Paddle -> ONNX).

    Args:
        path: the source (export directory, Paddle inference model prefix/file/directory).
        out: the output directory (written atomically with a ``slim.json`` manifest).
        format: ``"paddle"`` (PIR) or ``"onnx"``; PIR -> legacy is not possible (re-export the Layer instead).
        verify: run source and result on the same inputs (needs known input shapes: from the
            source manifest or ``verify_data``).
        verify_data: inputs for verification (an array or one per input).
        tolerance: allowed max abs error, scaled by ``max(1, max |source output|)``.
        opset: ONNX opset.
        overwrite: replace an existing ``out``.

    Returns:
        An :class:`ExportResult`; the source manifest's compression record is carried over.

    Raises:
        ConfigError: unsupported conversion or unknown format.
        OutputExistsError, MissingExtraError, ExportError, VerificationError: as in :func:`export`.

    Example:
        >>> convert("ocr/det_legacy", "ocr/det_pir", format="paddle")   # doctest: +SKIP
    """
    check_choice("format", format, FORMATS)
    arts, src_manifest = locate_artifacts(path)
    src = next((a for a in arts.values() if a.runtime == "paddle"), None)
    if src is None:
        raise ConfigError(f"{path} holds only an ONNX model; converting from ONNX is not supported")
    if format == "paddle-legacy" and src.format != "paddle-legacy":
        raise ConfigError(
            "converting a PIR program to the legacy format is not supported by Paddle; export the Layer with format='paddle-legacy'"
        )
    target = check_writable(out, overwrite=overwrite)
    _check_extras([format], verify)
    probe = Predictor(path, backend="paddle", format=src.format, threads=1)
    inputs = (
        [dict(i) for i in src_manifest.inputs]
        if src_manifest
        else [{"name": i.name, "shape": None, "dtype": i.dtype} for i in probe.inputs]  # unknown until data is seen
    )
    data: list[np.ndarray] | None = None
    if verify:
        if verify_data is not None:
            data = _data_arrays(verify_data, len(probe.input_names))
        elif src_manifest is not None:
            data = example_inputs(specs_from_dicts(inputs), batch=2)
        else:
            raise ConfigError(f"{path} has no slim.json, so its input shapes are unknown: pass verify_data or verify=False")
    if not src_manifest:
        if data is not None:
            inputs = [{"name": n, "shape": [-1] + list(a.shape[1:]), "dtype": str(a.dtype)} for n, a in zip(probe.input_names, data)]
    model_file, params_file = FILES[format]
    with atomic_dir(target, overwrite=overwrite) as tmp:
        if format == "onnx":
            assert src.params is not None
            paddle_to_onnx(src.model, src.params, tmp / model_file, opset=opset)
        elif src.format == format:
            shutil.copyfile(src.model, tmp / model_file)
            assert src.params is not None and params_file is not None
            shutil.copyfile(src.params, tmp / params_file)
        else:  # legacy -> PIR
            with tempfile.TemporaryDirectory(prefix="slim-convert-") as work:
                prefix = convert_to_pir(src.model, Path(work) / "model")
                shutil.move(str(prefix) + ".json", tmp / model_file)
                shutil.move(str(prefix) + ".pdiparams", tmp / str(params_file))
        compression = src_manifest.compression if src_manifest else None
        manifest = write_manifest(tmp, inputs, format=format, compression=compression)
        reports: dict[str, CompareReport] = {}
        if data is not None:
            reports, outputs = _verify(tmp, [format], data, probe, f"{src.format} model {src.model}", tolerance, None)
            manifest = write_manifest(
                tmp,
                inputs,
                format=format,
                outputs=outputs,
                compression=compression,
                int8=manifest.int8,
                verification={f: r.to_dict() for f, r in reports.items()},
            )
    probe.close()
    return ExportResult(path=target, formats=[format], manifest=manifest, verification=reports)


def describe(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of an export directory (alias of :func:`read_manifest`)."""
    return read_manifest(path)
