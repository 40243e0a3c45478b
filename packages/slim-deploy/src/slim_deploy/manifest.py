"""The ``slim.json`` manifest written next to every exported model, and model-file discovery.

The manifest records what a deployed model is: its format(s) and files, inputs
(names, shapes with -1 for dynamic sizes, dtypes), parameter dtypes and bytes,
the compression applied (filled by slim-quant, slim-prune, ...), whether it is
INT8, the verification against the source, the versions that wrote it, and the
SHA-256 of every model file, checked by :func:`locate_artifacts` (so ``Predictor``
and ``slim run``) before a model runs: a damaged or replaced file is an error, not
wrong outputs.

Example:
    >>> m = read_manifest("out/resnet18")              # doctest: +SKIP
    >>> m.format, m.inputs[0]["shape"], m.int8          # doctest: +SKIP
    ('paddle', [-1, 3, 224, 224], False)
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from slim_core import ConfigError, ModelLoadError, atomic_write
from slim_core.model_io import file_sha256, read_program_desc, resolve_model_path, verify_sha256
from slim_core.params_file import read_params_file
from slim_deploy.__about__ import __version__

__all__ = [
    "MANIFEST_NAME",
    "ExportFormat",
    "FORMATS",
    "Artifact",
    "Manifest",
    "read_manifest",
    "write_manifest",
    "locate_artifacts",
    "has_quant_ops",
    "program_op_types",
    "parameter_summary",
]

MANIFEST_NAME = "slim.json"
SCHEMA = 1
ExportFormat = Literal["paddle", "paddle-legacy", "onnx"]
FORMATS: tuple[str, ...] = ("paddle", "paddle-legacy", "onnx")
# file names inside an export directory, per format
FILES = {
    "paddle": ("model.json", "model.pdiparams"),
    "paddle-legacy": ("model_legacy.pdmodel", "model_legacy.pdiparams"),
    "onnx": ("model.onnx", None),
}
# operator types that only appear in quantized programs (legacy op types and PIR op names)
_QUANT_PREFIXES = (
    "quantize_linear",
    "dequantize_linear",
    "fake_quantize",
    "fake_channel_wise",
    "fake_dequantize",
    "quantize",
    "dequantize",
)
_ONNX_QUANT = (b"QuantizeLinear", b"DequantizeLinear")


@dataclass(frozen=True)
class Artifact:
    """One runnable model file set: its format, model file and (Paddle only) parameter file."""

    format: str
    model: Path
    params: Path | None = None

    @property
    def runtime(self) -> str:
        return "onnxruntime" if self.format == "onnx" else "paddle"


@dataclass
class Manifest:
    """Contents of ``slim.json``. ``format`` is the primary artifact; ``artifacts`` maps format -> file names."""

    format: str
    artifacts: dict[str, dict[str, str | None]]
    inputs: list[dict[str, Any]]
    outputs: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    compression: dict[str, Any] | None = None
    int8: bool = False
    verification: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    schema: int = SCHEMA
    sha256: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "format": self.format,
            "artifacts": self.artifacts,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "parameters": self.parameters,
            "compression": self.compression,
            "int8": self.int8,
            "verification": self.verification,
            "versions": self.versions,
            "created": self.created,
            "sha256": self.sha256,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        missing = [k for k in ("format", "artifacts", "inputs") if k not in data]
        if missing:
            raise ModelLoadError(f"manifest lacks the field(s) {', '.join(missing)}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _versions() -> dict[str, str]:
    out = {"slim-deploy": __version__}
    for dist in ("slim-core", "paddlepaddle", "paddlepaddle-gpu", "paddle2onnx", "onnx", "onnxruntime"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def _manifest_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.name == MANIFEST_NAME:
        return p
    if p.is_dir():
        return p / MANIFEST_NAME
    return p.parent / MANIFEST_NAME


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read ``slim.json`` from an export directory (or the manifest file itself).

    Raises:
        ModelLoadError: no manifest, or it is not valid JSON / lacks required fields.
    """
    f = _manifest_file(path)
    if not f.is_file():
        raise ModelLoadError(f"no {MANIFEST_NAME} manifest at {f}")
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"manifest {f} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"manifest {f} does not hold a JSON object")
    return Manifest.from_dict(data)


def check_compression(compression: Any) -> dict[str, Any] | None:
    """Validate the ``compression`` record: None or a JSON-serializable dict."""
    if compression is None:
        return None
    if not isinstance(compression, dict):
        raise ConfigError(f"compression must be a dict (or None), got {type(compression).__name__}")
    try:
        json.dumps(compression)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"compression must be JSON-serializable (plain numbers, strings, lists, dicts): {exc}") from exc
    return dict(compression)


def program_op_types(model_file: str | os.PathLike[str]) -> set[str]:
    """Operator types in a model file without loading parameters (PIR json, legacy protobuf or ONNX)."""
    f = Path(model_file)
    if f.suffix == ".pdmodel":
        desc = read_program_desc(f)  # parsed and checked (a damaged legacy program crashes Paddle's loader)
        return {op.type for block in desc.blocks for op in block.ops}
    try:
        data = f.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {f}: {exc.strerror or exc}") from exc
    if f.suffix == ".json":
        return {m.decode() for m in re.findall(rb'"#":"[0-9]+\.([A-Za-z_0-9]+)"', data)}
    if f.suffix == ".onnx":
        # ONNX stores op types as plain strings in NodeProto; no op table to confuse a scan
        return {m.decode() for m in _ONNX_QUANT if m in data}
    raise ModelLoadError(f"unknown model file type {f} (expected .json, .pdmodel or .onnx)")


def has_quant_ops(model_file: str | os.PathLike[str]) -> bool:
    """Whether a model file contains quantize/dequantize operators (read from the program, parameters not loaded)."""
    return any(t.startswith(_QUANT_PREFIXES) or t in ("QuantizeLinear", "DequantizeLinear") for t in program_op_types(model_file))


def parameter_summary(artifact: Artifact) -> dict[str, Any]:
    """Count, bytes and dtypes of an artifact's stored parameters (``{}`` when they cannot be read cheaply)."""
    dtypes: dict[str, int] = {}
    total = 0
    count = 0
    if artifact.params is not None:
        for rec in read_params_file(artifact.params):
            dtypes[rec.dtype] = dtypes.get(rec.dtype, 0) + 1
            total += rec.nbytes
            count += 1
    elif artifact.format == "onnx":
        try:
            import onnx
            from onnx import helper
        except ImportError:
            return {"file_bytes": artifact.model.stat().st_size}
        model = onnx.load(str(artifact.model), load_external_data=False)
        for init in model.graph.initializer:
            name = helper.tensor_dtype_to_np_dtype(init.data_type).name
            dtypes[name] = dtypes.get(name, 0) + 1
            n = 1
            for d in init.dims:
                n *= int(d)
            total += n * helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
            count += 1
    return {"count": count, "bytes": total, "dtypes": dict(sorted(dtypes.items())), "file_bytes": artifact.model.stat().st_size}


def write_manifest(
    directory: str | os.PathLike[str],
    inputs: list[dict[str, Any]],
    *,
    format: str | None = None,
    outputs: list[str] | None = None,
    compression: dict[str, Any] | None = None,
    int8: bool | None = None,
    verification: dict[str, Any] | None = None,
) -> Manifest:
    """Describe the model files in ``directory`` and write ``slim.json`` there atomically.

    Other packages call this after writing model files themselves (for example a
    quantizer writing its own INT8 program). Artifacts are found by their file
    names (``model.json``/``model.pdiparams``, ``model_legacy.pdmodel``/..., ``model.onnx``).

    Args:
        directory: the export directory.
        inputs: ``[{"name", "shape", "dtype"}]`` (dynamic sizes as -1; ``shape``/``dtype`` None when unknown),
            see :func:`slim_core.spec.spec_to_dicts`.
        format: the primary artifact's format (default: the first present of paddle, paddle-legacy, onnx).
        outputs: output names, when known.
        compression: what was applied, e.g. ``{"quantization": {"method": "ptq", "bits": 8}}``.
        int8: whether the model is INT8; default: detected from quantize ops in the files.
        verification: per-format comparison results against the source model.

    Returns:
        The written :class:`Manifest`.

    Raises:
        ModelLoadError: ``directory`` holds no model files.
        ConfigError: ``compression`` is not a JSON-serializable dict or ``format`` is unknown.
    """
    d = Path(directory)
    arts = _artifacts_in_dir(d)
    if not arts:
        raise ModelLoadError(f"no exported model files in {d} (expected one of {', '.join(f for f, _ in FILES.values())})")
    if format is None:
        format = next(iter(arts))
    if format not in arts:
        raise ConfigError(f"format {format!r} has no files in {d}; present: {', '.join(arts)}")
    primary = arts[format]
    if int8 is None:
        int8 = any(has_quant_ops(a.model) for a in arts.values())
    manifest = Manifest(
        format=format,
        artifacts={f: {"model": a.model.name, "params": a.params.name if a.params else None} for f, a in arts.items()},
        inputs=inputs,
        outputs=list(outputs or []),
        parameters=parameter_summary(primary),
        compression=check_compression(compression),
        int8=bool(int8),
        verification=dict(verification or {}),
        versions=_versions(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        sha256={f.name: file_sha256(f) for a in arts.values() for f in (a.model, a.params) if f is not None},
    )
    with atomic_write(d / MANIFEST_NAME) as fh:
        json.dump(manifest.to_dict(), fh, indent=2)
        fh.write("\n")
    return manifest


def _artifacts_in_dir(d: Path) -> dict[str, Artifact]:
    arts: dict[str, Artifact] = {}
    for fmt, (model, params) in FILES.items():
        m = d / model
        if m.is_file() and (params is None or (d / params).is_file()):
            arts[fmt] = Artifact(fmt, m, d / params if params else None)
    return arts


def locate_artifacts(path: str | os.PathLike[str]) -> tuple[dict[str, Artifact], Manifest | None]:
    """Find the runnable model files at ``path``.

    ``path`` may be an export directory (with ``slim.json``), a directory holding one
    Paddle model, a Paddle model prefix or file, or an ``.onnx`` file.

    Returns:
        ``(artifacts by format, manifest or None)``; the manifest's primary format comes first.

    Raises:
        ModelLoadError: nothing runnable is found, naming what was looked for.
    """
    p = Path(path)
    if p.is_dir() and (p / MANIFEST_NAME).is_file():
        manifest = read_manifest(p)
        if not isinstance(manifest.sha256, dict):
            raise ModelLoadError(f"{p / MANIFEST_NAME}: 'sha256' must map file names to digests")
        verify_sha256(p, manifest.sha256, source=str(p / MANIFEST_NAME))  # manifests of earlier versions hold none
        arts: dict[str, Artifact] = {}
        for fmt, files in manifest.artifacts.items():
            model = p / str(files["model"])
            params = p / str(files["params"]) if files.get("params") else None
            if not model.is_file() or (params is not None and not params.is_file()):
                raise ModelLoadError(f"{p / MANIFEST_NAME} lists {fmt} files {files} that are missing")
            arts[fmt] = Artifact(fmt, model, params)
        order = [manifest.format] + [f for f in arts if f != manifest.format]
        return {f: arts[f] for f in order if f in arts}, manifest
    if p.suffix == ".onnx":
        if not p.is_file():
            raise ModelLoadError(f"ONNX model file not found: {p}")
        return {"onnx": Artifact("onnx", p)}, None
    if p.is_dir():
        onnx_files = sorted(p.glob("*.onnx"))
        paddle_present = any(p.glob("*.pdiparams"))
        if onnx_files and not paddle_present:
            if len(onnx_files) > 1:
                raise ModelLoadError(f"directory {p} holds several ONNX models; pass the file")
            return {"onnx": Artifact("onnx", onnx_files[0])}, None
    prefix, fmt = resolve_model_path(p)
    suffix = ".json" if fmt == "pir" else ".pdmodel"
    name = "paddle" if fmt == "pir" else "paddle-legacy"
    params = Path(str(prefix) + ".pdiparams")
    if not params.is_file():
        raise ModelLoadError(f"parameter file not found: {params} (the model file {prefix}{suffix} needs it)")
    return {name: Artifact(name, Path(str(prefix) + suffix), params)}, None
