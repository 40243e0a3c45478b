"""Reader for Paddle's combined parameter file (``*.pdiparams``).

Paddle 3.3 loads a truncated ``.pdiparams`` without complaint and runs the
model on whatever bytes it finds (we saw outputs of 1e35). This module walks
the file's records itself so a damaged file is caught by name before Paddle
touches it, and so tools can list parameter dtypes and sizes without loading a
program (``model_size`` uses it to show int8 weights as int8).

Record layout, repeated per tensor: uint32 version, uint64 LoD level count
(then per level a uint64 byte size and the data), uint32 tensor version,
int32 size of a ``TensorDesc`` protobuf (field 1: data type enum, field 2:
dims), the protobuf, and the raw data.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from slim_core.errors import ModelLoadError

__all__ = ["TensorRecord", "read_params_file", "DTYPE_NAMES"]

# VarType enum of framework.proto -> (name, bytes per element)
DTYPE_NAMES: dict[int, tuple[str, int]] = {
    0: ("bool", 1),
    1: ("int16", 2),
    2: ("int32", 4),
    3: ("int64", 8),
    4: ("float16", 2),
    5: ("float32", 4),
    6: ("float64", 8),
    20: ("uint8", 1),
    21: ("int8", 1),
    22: ("bfloat16", 2),
    23: ("complex64", 8),
    24: ("complex128", 16),
    32: ("float8_e4m3fn", 1),
    33: ("float8_e5m2", 1),
}


@dataclass(frozen=True)
class TensorRecord:
    """One tensor stored in a ``.pdiparams`` file."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    offset: int


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("varint runs past the end")
        c = buf[i]
        i += 1
        result |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return result, i


def _parse_desc(desc: bytes) -> tuple[int, list[int]]:
    j, dtype, dims = 0, -1, []
    while j < len(desc):
        tag, j = _varint(desc, j)
        field, wire = tag >> 3, tag & 7
        if field == 1 and wire == 0:
            dtype, j = _varint(desc, j)
        elif field == 2 and wire == 0:
            d, j = _varint(desc, j)
            dims.append(d)
        elif field == 2 and wire == 2:
            n, j = _varint(desc, j)
            end = j + n
            while j < end:
                d, j = _varint(desc, j)
                dims.append(d)
        elif wire == 0:
            _, j = _varint(desc, j)
        elif wire == 2:
            n, j = _varint(desc, j)
            j += n
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    return dtype, dims


def read_params_file(path: str | os.PathLike[str], expected_count: int | None = None) -> list[TensorRecord]:
    """List the tensors of a ``.pdiparams`` file, checking it is complete.

    Args:
        path: the file.
        expected_count: when given, the number of tensors the program needs.

    Raises:
        ModelLoadError: the file is truncated, has trailing bytes, holds an unknown
            record, or holds a different number of tensors than expected.
    """
    p = Path(path)
    try:
        buf = p.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read parameter file {p}: {exc.strerror or exc}") from exc
    records: list[TensorRecord] = []
    i = 0
    try:
        while i < len(buf):
            (_version,) = struct.unpack_from("<I", buf, i)
            i += 4
            (lod_levels,) = struct.unpack_from("<Q", buf, i)
            i += 8
            if lod_levels > 64:
                raise ValueError(f"implausible LoD level count {lod_levels}")
            for _ in range(lod_levels):
                (n,) = struct.unpack_from("<Q", buf, i)
                i += 8 + n
            i += 4  # tensor version
            (desc_size,) = struct.unpack_from("<i", buf, i)
            i += 4
            if desc_size < 0 or i + desc_size > len(buf):
                raise ValueError("tensor description runs past the end")
            dtype_id, dims = _parse_desc(buf[i : i + desc_size])
            i += desc_size
            if dtype_id not in DTYPE_NAMES:
                raise ValueError(f"unknown data type id {dtype_id}")
            name, width = DTYPE_NAMES[dtype_id]
            numel = 1
            for d in dims:
                numel *= d
            nbytes = numel * width
            if i + nbytes > len(buf):
                raise ValueError(
                    f"tensor {len(records)} ({name} {dims}) needs {nbytes} bytes but only {len(buf) - i} remain: the file is truncated"
                )
            records.append(TensorRecord(name, tuple(dims), nbytes, i))
            i += nbytes
    except (struct.error, ValueError) as exc:
        raise ModelLoadError(f"parameter file {p} is corrupt or truncated at byte {i} of {len(buf)}: {exc}") from exc
    if expected_count is not None and len(records) != expected_count:
        raise ModelLoadError(f"parameter file {p} holds {len(records)} tensors but the model needs {expected_count}")
    return records
