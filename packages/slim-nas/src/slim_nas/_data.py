"""Labelled batches for the training loops of OFA and DARTS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import paddle

from slim_core import Batches, DataError

__all__ = ["labelled_batches", "cycle"]


def labelled_batches(data: Any) -> Iterator[tuple[Any, Any]]:
    """Yield ``(x, y)`` tensors from any source slim_core.Batches reads; labels are required."""
    for idx, (inputs, rest) in enumerate(Batches(data).with_rest()):
        if not rest:
            raise DataError(f"batch {idx} has no labels: training needs (inputs, labels) batches")
        yield paddle.to_tensor(inputs["x"]), paddle.to_tensor(np.asarray(rest[0]).astype("int64").reshape([-1]))


def cycle(data: Any) -> Iterator[tuple[Any, Any]]:
    """Cycle over ``labelled_batches(data)`` forever (``data`` must be re-iterable)."""
    while True:
        yield from labelled_batches(data)
