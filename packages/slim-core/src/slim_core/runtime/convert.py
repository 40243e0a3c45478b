"""Paddle inference model -> ONNX with paddle2onnx, for runtimes that read ONNX only (ONNX Runtime, OpenVINO for PIR)."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from slim_core.errors import ExportError, error_summary
from slim_core.extras import available, require
from slim_core.runtime.onnx_fix import fix_concat_ranks

__all__ = ["paddle_to_onnx", "quiet_stdout"]


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence stdout at the C++ and the Python level (paddle2onnx prints progress lines from both)."""
    try:
        fd = os.dup(1)
    except OSError:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    yield
            finally:
                os.dup2(fd, 1)
    finally:
        os.close(fd)


def paddle_to_onnx(
    model_file: str | os.PathLike[str],
    params_file: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    *,
    opset: int = 13,
    package: str = "slim-deploy",
) -> Path:
    """Convert a Paddle inference model (PIR ``.json`` or legacy ``.pdmodel``) to ONNX with paddle2onnx.

    paddle2onnx's own graph optimizer is switched off: its default (polygraphy) tries to
    ``pip install`` packages at run time; ONNX Runtime and OpenVINO optimize the graph anyway.

    Args:
        package: the slim distribution whose ``[onnx]`` extra a missing paddle2onnx names.

    Raises:
        MissingExtraError: paddle2onnx is not installed.
        ExportError: paddle2onnx refuses the model (its message is kept).

    Example:
        >>> paddle_to_onnx("out/model.json", "out/model.pdiparams", "out/model.onnx")   # doctest: +SKIP
    """
    from slim_core.model_io import check_model_files, convert_to_pir

    p2o = require("paddle2onnx", package=package, extra="onnx", what="ONNX export")
    model_file, params_file, out_file = Path(model_file), Path(params_file), Path(out_file)
    check_model_files(model_file, params_file)  # paddle2onnx converts damaged files without a word
    with tempfile.TemporaryDirectory(prefix="slim-p2o-") as tmp:
        if model_file.suffix == ".pdmodel":
            # convert through slim_core (checked) instead of paddle2onnx's own temp-dir translation
            prefix = convert_to_pir(model_file, Path(tmp) / "pir")
            model_file, params_file = Path(str(prefix) + ".json"), Path(str(prefix) + ".pdiparams")
        try:
            with quiet_stdout():
                p2o.export(
                    str(model_file),
                    str(params_file),
                    str(out_file),
                    opset_version=opset,
                    verbose=False,
                    enable_onnx_checker=True,
                    optimize_tool="None",
                )
        except Exception as exc:
            raise ExportError(f"paddle2onnx could not convert {model_file}: {error_summary(exc)}") from exc
    if not out_file.is_file() or out_file.stat().st_size == 0:
        raise ExportError(f"paddle2onnx wrote no ONNX file for {model_file} (unsupported operators? run with verbose paddle2onnx to see)")
    if available("onnx"):
        import onnx

        model = onnx.load(str(out_file))
        if fix_concat_ranks(model):  # paddle2onnx 2.1 output that ONNX Runtime refuses (PP-OCR models)
            onnx.save(model, str(out_file))
    return out_file
