"""One adapter from user data to validated batches of named model inputs.

Accepted sources: a ``paddle.io.DataLoader`` (or any iterable / generator) whose
items are arrays, tensors, tuples ``(x, label)`` or dicts; a list of such
items; a single numpy array or a dict of arrays (one batch).

Example:
    >>> import numpy as np
    >>> batches = Batches([np.zeros((2, 3), "float32")], input_names=["x"])
    >>> [b["x"].shape for b in batches]
    [(2, 3)]
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from slim_core.errors import DataError, SlimError

__all__ = ["Batches", "to_numpy", "check_array", "iter_inputs", "data_errors"]

# Paddle's error classes that a wrong input shape or dtype raises ("(InvalidArgument) The number of input's channels ...")
_PADDLE_DATA_ERROR = re.compile(
    r"\((InvalidArgument|InvalidType|NotFound|OutOfRange|Unimplemented|PreconditionNotMet)\)|shape|dtype|data type"
)

Shape = Sequence[int | None]


def to_numpy(value: Any) -> np.ndarray:
    """Convert a paddle Tensor, numpy array or nested list to a numpy array."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "numpy") and callable(value.numpy):
        return np.asarray(value.numpy())
    try:
        return np.asarray(value)
    except Exception as exc:  # ragged lists and arbitrary objects
        raise DataError(f"cannot turn a {type(value).__name__} into an array: {exc}") from exc


def check_array(arr: np.ndarray, name: str, *, shape: Shape | None = None, dtype: str | None = None, where: str = "") -> None:
    """Raise DataError when ``arr`` is empty, not finite, mis-shaped or of the wrong dtype."""
    at = f" in {where}" if where else ""
    if arr.dtype == object:
        raise DataError(f"input {name!r}{at} is an object array (ragged or non-numeric data)")
    if arr.size == 0:
        raise DataError(f"input {name!r}{at} is empty (shape {list(arr.shape)})")
    if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating):
        finite = np.isfinite(arr)
        if not finite.all():
            n_nan = int(np.isnan(arr).sum())
            n_inf = int((~finite).sum()) - n_nan
            raise DataError(f"input {name!r}{at} holds {n_nan} NaN and {n_inf} inf values; clean the data first")
    if shape is not None:
        ok = len(shape) == arr.ndim and all(s in (None, -1) or s == a for s, a in zip(shape, arr.shape))
        if not ok:
            exp = [("?" if s in (None, -1) else s) for s in shape]
            raise DataError(f"input {name!r}{at} has shape {list(arr.shape)} but the model expects {exp}")
    if dtype is not None:
        want = np.dtype(dtype)
        if np.issubdtype(want, np.floating) and not np.issubdtype(arr.dtype, np.floating):
            raise DataError(f"input {name!r}{at} has dtype {arr.dtype} but the model expects {want} (floating point)")
        if np.issubdtype(want, np.integer) and not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"input {name!r}{at} has dtype {arr.dtype} but the model expects {want} (integer)")


class Batches:
    """Validated, re-iterable view of user data as ``{input_name: array}`` batches.

    Args:
        data: DataLoader, iterable, generator, list of batches, an array or a dict.
        input_names: model input names, in order; default ``["x"]`` or the dict keys.
        shapes: expected shape per input (``None``/``-1`` for any size), checked per batch.
        dtypes: expected dtype per input, checked per batch.
        limit: stop after this many batches (calibration usually needs few).

    Iterating yields dicts; :meth:`with_rest` also yields the remaining tuple items
    (labels). A generator can be iterated once; lists and DataLoaders many times.

    Raises:
        DataError: on an empty source or any invalid batch, naming input and batch index.
    """

    def __init__(
        self,
        data: Any,
        input_names: Sequence[str] | None = None,
        *,
        shapes: dict[str, Shape] | Sequence[Shape] | None = None,
        dtypes: dict[str, str] | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> None:
        if data is None:
            raise DataError("no data given (got None)")
        if isinstance(data, (np.ndarray, dict)) or _is_tensor(data):
            data = [data]
        self._data = data
        self._once = isinstance(data, Iterator)
        self._used = False
        self.input_names = list(input_names) if input_names else None
        self.shapes = self._by_name(shapes)
        self.dtypes = self._by_name(dtypes)
        if limit is not None and limit < 1:
            raise DataError(f"limit must be >= 1, got {limit}")
        self.limit = limit

    def _by_name(self, value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        if isinstance(value, dict):
            return dict(value)
        names = self.input_names or ["x"]
        value = list(value)
        if value and not isinstance(value[0], (list, tuple, str, np.dtype)) and len(names) == 1:
            value = [value]  # a single shape given for a single input
        return dict(zip(names, value))

    def _split(self, item: Any, idx: int) -> tuple[dict[str, np.ndarray], tuple[Any, ...]]:
        names = self.input_names
        if isinstance(item, dict):
            keys = names or list(item)
            missing = [k for k in keys if k not in item]
            if missing:
                raise DataError(f"batch {idx} has no input {missing[0]!r} (keys: {', '.join(map(str, item))})")
            return {k: to_numpy(item[k]) for k in keys}, tuple(v for k, v in item.items() if k not in keys)
        if isinstance(item, (list, tuple)):
            n = len(names) if names else 1
            if len(item) < n:
                raise DataError(f"batch {idx} has {len(item)} items but the model takes {n} inputs")
            names = names or ["x"]
            return {k: to_numpy(v) for k, v in zip(names, item[:n])}, tuple(item[n:])
        names = names or ["x"]
        if len(names) != 1:
            raise DataError(f"batch {idx} is a single array but the model takes {len(names)} inputs ({', '.join(names)})")
        return {names[0]: to_numpy(item)}, ()

    def with_rest(self) -> Iterator[tuple[dict[str, np.ndarray], tuple[Any, ...]]]:
        """Yield ``(inputs, rest)`` where ``rest`` holds the labels or extra items."""
        if self._once and self._used:
            raise DataError("this data source is a generator and was already consumed; pass a list or a DataLoader to iterate twice")
        self._used = True
        count = 0
        try:
            iterator = iter(self._data)
        except TypeError as exc:
            raise DataError(f"data of type {type(self._data).__name__} is not iterable") from exc
        for idx, item in enumerate(iterator):
            inputs, rest = self._split(item, idx)
            for name, arr in inputs.items():
                check_array(
                    arr,
                    name,
                    shape=(self.shapes or {}).get(name),
                    dtype=(self.dtypes or {}).get(name),
                    where=f"batch {idx}",
                )
            count += 1
            yield inputs, rest
            if self.limit is not None and count >= self.limit:
                break
        if count == 0:
            raise DataError("the data set is empty: it yielded no batch")

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for inputs, _ in self.with_rest():
            yield inputs

    def map(self, fn: Callable[[dict[str, np.ndarray]], Any]) -> list[Any]:
        """Apply ``fn`` to each batch and return the results."""
        return [fn(b) for b in self]

    def materialize(self) -> Batches:
        """Read every batch once into memory (makes a generator re-iterable)."""
        items = [dict(b) for b in self]
        return Batches(items, self.input_names or list(items[0]), shapes=self.shapes, dtypes=self.dtypes)


def _describe(inputs: Sequence[Any], names: Sequence[str] | None) -> str:
    parts = []
    for i, x in enumerate(inputs):
        name = names[i] if names is not None and i < len(names) else (f"#{i}" if len(inputs) > 1 else "x")
        shape = list(getattr(x, "shape", []) or [])
        dtype = str(getattr(x, "dtype", type(x).__name__)).replace("paddle.", "")
        parts.append(f"{name!r} (shape {shape}, {dtype})")
    return "input " + ", ".join(parts) if len(parts) == 1 else "inputs " + ", ".join(parts)


@contextlib.contextmanager
def data_errors(layer: Any, inputs: Sequence[Any], *, names: Sequence[str] | None = None, where: str = "") -> Iterator[None]:
    """Run a model on user data inside the block; Paddle's shape/dtype errors become a DataError.

    The message names every input with its shape and dtype, says what the model's
    first layer expects, and keeps Paddle's first line. Errors that are not about the
    data (and slim's own errors) pass through unchanged.

    Example:
        >>> with data_errors(model, [x], names=["x"], where="calibration batch 0"):  # doctest: +SKIP
        ...     model(paddle.to_tensor(x))
    """
    try:
        yield
    except SlimError:
        raise
    except (ValueError, RuntimeError, TypeError) as exc:
        msg = str(exc).strip()
        if not _PADDLE_DATA_ERROR.search(msg):
            raise
        first = next((ln.strip() for ln in msg.splitlines() if "(" in ln and ")" in ln and ln.strip()), msg.splitlines()[0] if msg else "")
        from slim_core.graph.trace import expected_input_hint

        at = f" in {where}" if where else ""
        raise DataError(
            f"{type(layer).__name__} cannot run on {_describe(inputs, names)}{at}: {expected_input_hint(layer)}; Paddle said: {first[:300]}"
        ) from exc


def _is_tensor(x: Any) -> bool:
    return type(x).__name__ == "Tensor" and hasattr(x, "numpy")


def iter_inputs(data: Iterable[Any], input_names: Sequence[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Shorthand for ``iter(Batches(data, input_names))``."""
    return iter(Batches(data, input_names))
