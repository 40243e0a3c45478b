"""Model size on disk with a per-dtype breakdown of the stored parameters."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slim_core.model_io import check_model_files, resolve_model_path
from slim_core.params_file import read_params_file

__all__ = ["DtypeStats", "ModelSize", "model_size"]


@dataclass(frozen=True)
class DtypeStats:
    """Tensors of one dtype in the parameter file."""

    tensors: int
    elements: int
    bytes: int


@dataclass
class ModelSize:
    """Result of :func:`model_size`.

    Attributes:
        total_bytes: bytes of the model file plus the parameter file.
        model_file_bytes: bytes of ``.json`` / ``.pdmodel``.
        params_file_bytes: bytes of ``.pdiparams``.
        by_dtype: ``{dtype: DtypeStats}`` of the stored parameters (int8 weights show as ``int8``).
        files: the files measured.
    """

    total_bytes: int
    model_file_bytes: int
    params_file_bytes: int
    by_dtype: dict[str, DtypeStats] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    @property
    def total_mb(self) -> float:
        return self.total_bytes / 1e6

    @property
    def parameters(self) -> int:
        return sum(s.elements for s in self.by_dtype.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_bytes": self.total_bytes,
            "model_file_bytes": self.model_file_bytes,
            "params_file_bytes": self.params_file_bytes,
            "by_dtype": {k: {"tensors": v.tensors, "elements": v.elements, "bytes": v.bytes} for k, v in self.by_dtype.items()},
            "files": list(self.files),
        }

    def __str__(self) -> str:
        parts = ", ".join(
            f"{k}: {v.elements:,} elements in {v.tensors} tensors ({v.bytes / 1e6:.2f} MB)" for k, v in sorted(self.by_dtype.items())
        )
        return f"{self.total_mb:.2f} MB on disk ({parts})"


def model_size(path: str | os.PathLike[str]) -> ModelSize:
    """Measure an inference model on disk (PIR ``.json`` or legacy ``.pdmodel`` + ``.pdiparams``).

    Args:
        path: a model prefix, a model file or a directory holding one model.

    Returns:
        A :class:`ModelSize`.

    Raises:
        ModelLoadError: a file is missing, empty or damaged (the program and the parameter
            file are checked as before running them), naming the file.

    Example:
        >>> s = slim_analysis.model_size("out/model")        # doctest: +SKIP
        >>> s.by_dtype["int8"].bytes                          # doctest: +SKIP
    """
    prefix, fmt = resolve_model_path(Path(path))
    model_file = Path(str(prefix) + (".json" if fmt == "pir" else ".pdmodel"))
    params_file = Path(str(prefix) + ".pdiparams")
    check_model_files(model_file, params_file)  # a missing parameter file is an error unless the program has no parameters
    has_params = params_file.is_file()
    records = read_params_file(params_file) if has_params else []
    by: dict[str, list[int]] = {}
    for r in records:
        n = 1
        for d in r.shape:
            n *= int(d)
        acc = by.setdefault(r.dtype, [0, 0, 0])
        acc[0] += 1
        acc[1] += n
        acc[2] += r.nbytes
    mb = model_file.stat().st_size
    pb = params_file.stat().st_size if has_params else 0
    return ModelSize(
        total_bytes=mb + pb,
        model_file_bytes=mb,
        params_file_bytes=pb,
        by_dtype={k: DtypeStats(*v) for k, v in by.items()},
        files=[str(model_file)] + ([str(params_file)] if has_params else []),
    )
