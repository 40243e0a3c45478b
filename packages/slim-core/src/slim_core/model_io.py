"""Load, detect, convert and save Paddle inference models (PIR and legacy).

Paddle 3 writes inference models as PIR programs (``model.json`` +
``model.pdiparams``); older tools and the oneDNN INT8 path use the legacy
ProgramDesc (``model.pdmodel`` + ``model.pdiparams``). Both load here into one
:class:`InferenceModel`.

Example:
    >>> m = load_inference_model("out/model")          # doctest: +SKIP
    >>> m.format, m.input_names                          # doctest: +SKIP
    ('pir', ['x'])
    >>> y = m.run({"x": batch})[0]                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from slim_core._paddle import require_paddle
from slim_core.atomic import check_writable
from slim_core.errors import ModelLoadError, SlimError, error_summary
from slim_core.params_file import read_params_file

__all__ = [
    "InferenceModel",
    "ModelFormat",
    "detect_format",
    "resolve_model_path",
    "load_inference_model",
    "save_inference_model",
    "convert_to_pir",
    "load_state_dict",
    "static_mode",
    "check_model_files",
    "read_program_desc",
    "file_sha256",
    "verify_sha256",
]

ModelFormat = Literal["pir", "legacy"]
_SUFFIX = {"pir": ".json", "legacy": ".pdmodel"}


@contextlib.contextmanager
def static_mode() -> Iterator[Any]:
    """Switch Paddle to static mode inside the block and restore the previous mode after."""
    paddle = require_paddle()
    was_dynamic = paddle.in_dynamic_mode()
    if was_dynamic:
        paddle.enable_static()
    try:
        yield paddle
    finally:
        if was_dynamic:
            paddle.disable_static()


def resolve_model_path(path: str | os.PathLike[str]) -> tuple[Path, ModelFormat]:
    """Find the model files for ``path`` (a prefix, a model file, or a directory).

    Returns:
        ``(prefix, format)`` where ``prefix + ".json"`` or ``prefix + ".pdmodel"`` exists.

    Raises:
        ModelLoadError: no model file is found, or a directory holds several.
    """
    p = Path(path)
    if p.is_dir():
        cands = sorted(list(p.glob("*.json")) + list(p.glob("*.pdmodel")))
        cands = [c for c in cands if c.name not in ("slim.json", "metrics.json") and c.with_suffix(".pdiparams").exists()]
        if not cands:
            raise ModelLoadError(f"no inference model (*.json or *.pdmodel with a .pdiparams beside it) in directory {p}")
        prefixes = {c.with_suffix("") for c in cands}
        if len(prefixes) > 1:
            raise ModelLoadError(f"directory {p} holds several models ({', '.join(sorted(c.name for c in cands))}); pass the path prefix")
        p = cands[0]
    if p.suffix in (".json", ".pdmodel", ".pdiparams"):
        prefix = p.with_suffix("")
    else:
        prefix = p
    pir_file = Path(str(prefix) + ".json")
    legacy_file = Path(str(prefix) + ".pdmodel")
    if pir_file.is_file():
        return prefix, "pir"
    if legacy_file.is_file():
        return prefix, "legacy"
    raise ModelLoadError(f"model file not found: neither {pir_file} nor {legacy_file} exists")


def detect_format(path: str | os.PathLike[str]) -> ModelFormat:
    """Return ``"pir"`` or ``"legacy"`` for the inference model at ``path``."""
    return resolve_model_path(path)[1]


@dataclass
class InferenceModel:
    """A loaded inference program with its own scope and executor.

    Attributes:
        prefix: path prefix of the model files.
        format: ``"pir"`` or ``"legacy"``.
        program: the Paddle program (``paddle.pir.Program`` or legacy ``Program``).
        input_names: feed names in order.
        fetch_targets: output values/variables.
    """

    prefix: Path
    format: ModelFormat
    program: Any
    input_names: list[str]
    fetch_targets: list[Any]
    scope: Any = field(repr=False, default=None)
    executor: Any = field(repr=False, default=None)

    @property
    def model_file(self) -> Path:
        return Path(str(self.prefix) + _SUFFIX[self.format])

    @property
    def params_file(self) -> Path:
        return Path(str(self.prefix) + ".pdiparams")

    def _guard(self) -> contextlib.AbstractContextManager[Any]:
        paddle = require_paddle()
        return paddle.pir_utils.OldIrGuard() if self.format == "legacy" else contextlib.nullcontext()

    def run(self, feed: dict[str, np.ndarray] | list[np.ndarray] | tuple[np.ndarray, ...]) -> list[np.ndarray]:
        """Run the program on numpy inputs (a dict by name, or a list in input order)."""
        paddle = require_paddle()
        if not isinstance(feed, dict):
            feed = dict(zip(self.input_names, feed))
        try:
            with static_mode(), self._guard(), paddle.static.scope_guard(self.scope):
                outs = self.executor.run(self.program, feed=feed, fetch_list=self.fetch_targets)
        except SlimError:
            raise
        except Exception as exc:  # Paddle's RuntimeError/ValueError: a damaged program, or inputs it cannot take
            shapes = ", ".join(f"{k} {list(np.shape(v))}" for k, v in feed.items())
            raise ModelLoadError(f"the program {self.prefix} failed to run on inputs {shapes}: {error_summary(exc)}") from exc
        return [np.asarray(o) for o in outs]

    def parameters(self) -> dict[str, np.ndarray]:
        """Persistable parameters of the program as numpy arrays, by name."""
        out: dict[str, np.ndarray] = {}
        for name in self.scope.local_var_names():
            var = self.scope.find_var(name)
            if var is None:
                continue
            try:
                t = var.get_tensor()
                arr = np.array(t)
            except Exception:  # non-tensor vars (feed/fetch lists) have no array
                continue
            if arr.size and name not in ("feed", "fetch"):
                out[name] = arr
        return out


def _check_params_file(prefix: Path, model_file: Path) -> Path:
    params = Path(str(prefix) + ".pdiparams")
    if not params.is_file():
        raise ModelLoadError(f"parameter file not found: {params} (the model file {model_file} needs it)")
    return params


# ----------------------------------------------------------------- file checks
def _read_model_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    if not data:
        raise ModelLoadError(f"model file {path} is empty")
    return data


def _pir_param_sizes(path: Path, data: bytes) -> list[int]:
    """Element counts of the parameters a PIR ``.json`` program declares, after checking its structure."""
    bad = f"model file {path} is not a Paddle PIR program"
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelLoadError(f"{bad} (invalid JSON: {str(exc)[:200]}); the file is corrupt or truncated") from exc
    try:
        if doc["base_code"]["magic"] != "pir":
            raise ModelLoadError(f"{bad} (its base_code.magic is {str(doc['base_code']['magic'])[:40]!r}, not 'pir')")
        ops = [op for region in doc["program"]["regions"] for block in region["blocks"] for op in block["ops"]]
        sizes = []
        for op in ops:
            if not isinstance(op, dict) or not isinstance(op.get("#"), str):
                raise ModelLoadError(f"{bad} (an operator has no name)")
            if op["#"] == "p":  # builtin.parameter: its result type holds [dtype, dims, layout, lod, offset]
                dims = op["O"]["TT"]["D"][1]
                n = 1
                for d in dims:
                    if not isinstance(d, int) or isinstance(d, bool) or d < 0:
                        raise ModelLoadError(f"{bad} (parameter {op.get('A', ['?'] * 4)[-1]!r} has dimension {d!r})")
                    n *= d
                sizes.append(n)
    except (KeyError, IndexError, TypeError) as exc:
        raise ModelLoadError(f"{bad} (missing or malformed field {exc}); the file is corrupt") from exc
    if not ops:
        raise ModelLoadError(f"{bad} (it holds no operators)")
    return sizes


def read_program_desc(path: str | os.PathLike[str]) -> Any:
    """Parse and check a legacy ``.pdmodel`` without handing it to Paddle's C++ loader.

    Checks that the protobuf parses, that every operator is one this Paddle registers and
    that every variable an operator reads or writes is declared in its block (or a parent
    block), so a damaged file is an error here instead of a crash in the runtime.

    Returns:
        The ``framework_pb2.ProgramDesc``.

    Raises:
        ModelLoadError: the file is missing, empty, or not a valid legacy program.

    Example:
        >>> desc = read_program_desc("out/model_legacy.pdmodel")  # doctest: +SKIP
        >>> {op.type for op in desc.blocks[0].ops} >= {"feed", "fetch"}  # doctest: +SKIP
        True
    """
    f = Path(path)
    data = _read_model_bytes(f)
    paddle = require_paddle()
    from paddle.base.proto import framework_pb2

    bad = f"legacy program {f} is corrupt"
    desc = framework_pb2.ProgramDesc()
    try:
        desc.ParseFromString(data)
    except Exception as exc:  # google.protobuf.message.DecodeError and friends
        raise ModelLoadError(f"{bad}: {str(exc)[:200]}") from exc
    if not desc.blocks or not desc.blocks[0].ops:
        raise ModelLoadError(f"{bad}: it holds no operators")
    known_ops = set(paddle.base.core.get_all_op_names())
    names_of: dict[int, set[str]] = {}
    for i, block in enumerate(desc.blocks):
        parent_ok = block.parent_idx == -1 if i == 0 else 0 <= block.parent_idx < i
        if block.idx != i or not parent_ok:
            raise ModelLoadError(f"{bad}: block {block.idx} (parent {block.parent_idx}) is out of order")
        names_of[i] = {v.name for v in block.vars} | (names_of[block.parent_idx] if i else set())
        for op in block.ops:
            if op.type not in known_ops:
                raise ModelLoadError(f"{bad}: unknown operator type {op.type[:60]!r}")
            for var in list(op.inputs) + list(op.outputs):
                for arg in var.arguments:
                    if arg and arg not in names_of[block.idx]:
                        raise ModelLoadError(f"{bad}: operator {op.type!r} uses the undeclared variable {arg[:60]!r}")
    return desc


def _legacy_param_sizes(path: Path) -> list[int | None]:
    desc = read_program_desc(path)
    sizes: list[int | None] = []
    for v in desc.blocks[0].vars:
        if v.persistable and v.type.type not in (9, 10):  # FEED_MINIBATCH and FETCH_LIST hold no data
            dims = [int(d) for d in v.type.dense_tensor.tensor.dims]
            sizes.append(None if any(d < 0 for d in dims) else _numel(tuple(dims)))
    return sizes


def _check_onnx(path: Path, data: bytes) -> None:
    try:
        import onnx
    except ImportError:  # ONNX Runtime's own loader then reports what it finds
        return
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # DecodeError, ValidationError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"ONNX model {path} is corrupt or not an ONNX model: {first[:200]}") from exc


def check_model_files(model_file: str | os.PathLike[str], params_file: str | os.PathLike[str] | None = None) -> None:
    """Check a model's files before any runtime reads them.

    A PIR ``.json`` must be a PIR program, a legacy ``.pdmodel`` a valid program
    (:func:`read_program_desc`), an ``.onnx`` file pass the ONNX checker (when ``onnx``
    is installed); the ``.pdiparams`` file must hold exactly the tensors the program
    declares, with their sizes, and no bytes more or less. Paddle runs a truncated
    parameter file and crashes on a damaged legacy program, so every loader and
    runner calls this first.

    Raises:
        ModelLoadError: naming the file and what is wrong.

    Example:
        >>> check_model_files("out/model.json", "out/model.pdiparams")  # doctest: +SKIP
    """
    mf = Path(model_file)
    sizes: list[int | None]
    if mf.suffix == ".onnx":
        _check_onnx(mf, _read_model_bytes(mf))
        return
    if mf.suffix == ".json":
        sizes = _pir_param_sizes(mf, _read_model_bytes(mf))
    elif mf.suffix == ".pdmodel":
        sizes = _legacy_param_sizes(mf)
    else:
        raise ModelLoadError(f"unknown model file type {mf} (expected .json, .pdmodel or .onnx)")
    if params_file is None or not Path(params_file).exists():
        if sizes:
            missing = "no parameter file was given" if params_file is None else f"the parameter file {params_file} is not found"
            raise ModelLoadError(f"model file {mf} declares {len(sizes)} parameters but {missing}")
        return  # a program without parameters: Paddle writes no parameter file for it
    records = read_params_file(params_file, expected_count=len(sizes))
    if None not in sizes and sorted(_numel(r.shape) for r in records) != sorted(sizes):
        raise ModelLoadError(
            f"parameter file {params_file} does not belong to {mf}: the tensor sizes differ from those the program declares"
        )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks.

    Example:
        >>> file_sha256("out/model.pdiparams")  # doctest: +SKIP
        '9f86d0...'
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(directory: str | os.PathLike[str], digests: Mapping[str, str], *, source: str = "the manifest") -> None:
    """Check files in ``directory`` against recorded SHA-256 digests (``{file name: hex}``).

    Raises:
        ModelLoadError: a file is missing or its content changed, naming the file.

    Example:
        >>> verify_sha256("out/model", {"model.json": "9f86d0..."})  # doctest: +SKIP
    """
    d = Path(directory)
    for name, digest in digests.items():
        f = d / name
        if Path(name).name != name or not f.is_file():
            raise ModelLoadError(f"{f} is listed in {source} but missing")
        actual = file_sha256(f)
        if actual != str(digest).lower():
            raise ModelLoadError(
                f"{f} does not match {source}: its SHA-256 is {actual[:12]}..., recorded {str(digest)[:12]}...; "
                "the file is damaged or was replaced after export"
            )


def load_inference_model(path: str | os.PathLike[str]) -> InferenceModel:
    """Load an inference model in either format.

    Args:
        path: a prefix (``out/model``), a model file, or a directory holding one model.

    Returns:
        An :class:`InferenceModel` ready to :meth:`~InferenceModel.run`.

    Raises:
        ModelLoadError: missing or corrupt files, naming the file.
    """
    paddle = require_paddle()
    prefix, fmt = resolve_model_path(path)
    model_file = Path(str(prefix) + _SUFFIX[fmt])
    params = _check_params_file(prefix, model_file)
    check_model_files(model_file, params)  # before Paddle reads them: it runs truncated files and crashes on damaged ones
    scope = paddle.static.Scope()
    guard = paddle.pir_utils.OldIrGuard() if fmt == "legacy" else contextlib.nullcontext()
    try:
        with static_mode(), guard, paddle.static.scope_guard(scope):
            exe = paddle.static.Executor(paddle.CPUPlace())
            program, feeds, fetches = paddle.static.load_inference_model(str(prefix), exe)
    except ModelLoadError:
        raise
    except Exception as exc:  # Paddle raises many types (ValueError, RuntimeError, its own) for corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"could not load inference model {model_file} with {params}: the files are corrupt or not a Paddle model ({first[:300]})"
        ) from exc
    # Paddle reads a truncated parameter file without error, so check it ourselves.
    read_params_file(params, expected_count=_count_params(program, fmt))
    return InferenceModel(
        prefix=prefix, format=fmt, program=program, input_names=list(feeds), fetch_targets=list(fetches), scope=scope, executor=exe
    )


def _count_params(program: Any, fmt: ModelFormat) -> int:
    if fmt == "pir":
        return sum(1 for op in program.global_block().ops if op.name() == "builtin.parameter")
    return sum(1 for v in program.list_vars() if v.persistable and v.name not in ("feed", "fetch"))


def _pir_feed_fetch(program: Any) -> tuple[list[Any], list[Any]]:
    feeds, fetches = [], []
    for op in program.global_block().ops:
        if op.name() in ("pd_op.data", "pd_op.feed"):
            feeds.append(op.result(0))
        elif op.name() == "pd_op.fetch":
            fetches.append(op.operand_source(0))
    return feeds, fetches


def save_inference_model(model: InferenceModel, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Save a loaded model under a new prefix in its own format.

    Returns:
        The new prefix.
    """
    paddle = require_paddle()
    out = check_writable(str(path) + _SUFFIX[model.format], overwrite=overwrite).with_suffix("")
    with static_mode(), model._guard(), paddle.static.scope_guard(model.scope):
        if model.format == "legacy":
            block = model.program.global_block()
            feed_vars = [block.var(n) for n in model.input_names]
            paddle.static.save_inference_model(str(out), feed_vars, model.fetch_targets, model.executor, program=model.program)
        else:
            feeds, fetches = _pir_feed_fetch(model.program)
            paddle.static.save_inference_model(str(out), feeds, model.fetch_targets or fetches, model.executor, program=model.program)
    return out


def convert_to_pir(path: str | os.PathLike[str], out_path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Convert a legacy ``.pdmodel`` inference model into a PIR ``.json`` model.

    The converted program is run once on zeros against the source when all input
    shapes are static, to prove the conversion kept the numbers.

    Returns:
        The prefix of the written PIR model.
    """
    paddle = require_paddle()
    src = load_inference_model(path)
    if src.format == "pir":
        return save_inference_model(src, out_path, overwrite=overwrite)
    out = check_writable(str(out_path) + ".json", overwrite=overwrite).with_suffix("")
    try:
        pir_prog = paddle.pir.translate_to_pir(src.program.desc)
    except Exception as exc:
        raise ModelLoadError(f"could not translate legacy program {src.model_file} to PIR: {str(exc).splitlines()[0][:300]}") from exc
    feeds, fetches = _pir_feed_fetch(pir_prog)
    with static_mode(), paddle.static.scope_guard(src.scope):
        paddle.static.save_inference_model(str(out), feeds, fetches, src.executor, program=pir_prog)
    return out


def load_state_dict(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> dict[str, Any]:
    """Load a dygraph ``.pdparams`` state dict.

    ``.pdparams`` files are Python pickles, which can run arbitrary code when
    loaded, so the caller must opt in with ``allow_pickle=True``.

    Raises:
        ModelLoadError: opt-in missing, file missing, or the file is corrupt.
    """
    p = Path(path)
    if not allow_pickle:
        raise ModelLoadError(f"{p} is a pickle file, which can run code when loaded; pass allow_pickle=True if you trust it")
    if not p.is_file():
        raise ModelLoadError(f"weights file not found: {p}")
    paddle = require_paddle()
    try:
        state = paddle.load(str(p))
    except Exception as exc:
        raise ModelLoadError(
            f"could not read weights file {p}: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}"
        ) from exc
    if not isinstance(state, dict):
        raise ModelLoadError(f"weights file {p} does not hold a state dict (found {type(state).__name__})")
    return state
