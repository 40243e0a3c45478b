"""All-or-nothing in-place transforms: snapshot a Layer, restore it on any failure.

Every slim verb that changes a model in place (``quantize_``, ``prune_``, ``sparsify_``,
``prepare_qat``, ``fold_bn_``, ``merge_``, ...) runs inside :func:`all_or_nothing`: it
either finishes, or the model is left exactly as it was (same sublayer tree, same
parameter objects with the same values and shapes, same attributes), whatever ended it,
a :class:`~slim_core.errors.SlimError`, a Paddle error, a user callback's exception or
Ctrl-C (``KeyboardInterrupt``).

The snapshot keeps a host (numpy) copy of every parameter and buffer while the verb runs,
and the containers of every sublayer (``_sub_layers``, ``_parameters``, ``_buffers``,
hooks) and its plain attributes. Restoring writes them back into the *same* objects, so
references the caller holds (an optimizer's parameter list, a hook handle) stay valid.

Example:
    >>> import paddle
    >>> net = paddle.nn.Sequential(paddle.nn.Linear(2, 2))
    >>> try:
    ...     with all_or_nothing(net):
    ...         net[0].weight.set_value(paddle.zeros([2, 2]))
    ...         raise RuntimeError("calibration failed")
    ... except RuntimeError:
    ...     pass
    >>> bool((net[0].weight.numpy() != 0).any())
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from slim_core._paddle import require_paddle

__all__ = ["LayerSnapshot", "all_or_nothing", "in_place", "set_tensor_value"]

F = TypeVar("F", bound=Callable[..., Any])


def set_tensor_value(tensor: Any, value: np.ndarray) -> None:
    """Replace the data of ``tensor`` (a Parameter or buffer) in place, shape included.

    ``Tensor.set_value`` refuses a new shape; writing the underlying DenseTensor keeps the
    Parameter object (and its name, trainable flag and hooks) while the shape changes.

    Example:
        >>> import numpy as np, paddle
        >>> p = paddle.nn.Linear(3, 2).weight
        >>> set_tensor_value(p, np.zeros((3, 1), "float32"))
        >>> list(p.shape)
        [3, 1]
    """
    paddle = require_paddle()
    place = paddle.CUDAPlace(tensor.place.gpu_device_id()) if tensor.place.is_gpu_place() else paddle.CPUPlace()
    value = np.ascontiguousarray(value, dtype=np.asarray(tensor.numpy()).dtype)
    tensor.get_tensor().set(value, place)


def _copy_container(value: Any) -> Any:
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, (list, set)):
        return list(value)
    return None


def _restore_container(obj: Any, saved: list[Any]) -> None:
    if isinstance(obj, dict):
        obj.clear()
        obj.update(saved)
    elif isinstance(obj, list):
        obj[:] = saved
    else:
        obj.clear()
        obj.update(saved)


class LayerSnapshot:
    """Everything an in-place verb may change in a Layer, captured so it can be put back.

    Args:
        model: a ``paddle.nn.Layer`` (every sublayer, parameter and buffer is captured).
        values: also copy parameter and buffer values (default). Verbs that only swap
            sublayers and never write a tensor of the original model (weight-only
            quantization, RepVGG merge) pass False and skip the host copy of the weights.

    Example:
        >>> import paddle
        >>> net = paddle.nn.Linear(2, 2)
        >>> snap = LayerSnapshot(net)
        >>> net.weight.set_value(paddle.zeros([2, 2]))
        >>> snap.restore()
        >>> bool((net.weight.numpy() != 0).any())
        True
    """

    def __init__(self, model: Any, *, values: bool = True) -> None:
        layers = [model, *model.sublayers()]
        # per layer: its attribute dict (plain values by reference) and the contents of its containers
        self._layers: list[tuple[Any, dict[str, Any], dict[str, tuple[Any, list[Any]]]]] = []
        self._tensors: list[tuple[Any, np.ndarray, bool]] = []
        seen: set[int] = set()
        for layer in layers:
            attrs = dict(layer.__dict__)
            containers = {}
            for key, value in attrs.items():
                saved = _copy_container(value)
                if saved is not None:
                    containers[key] = (value, saved)
            self._layers.append((layer, attrs, containers))
            for store in ("_parameters", "_buffers") if values else ():
                for t in getattr(layer, store, {}).values():
                    if t is None or id(t) in seen:
                        continue
                    seen.add(id(t))
                    self._tensors.append((t, np.array(t.numpy(), copy=True), bool(t.stop_gradient)))

    def restore(self) -> None:
        """Put the sublayer tree, the attributes and every parameter/buffer value back."""
        for layer, attrs, containers in self._layers:
            layer.__dict__.clear()
            layer.__dict__.update(attrs)
            for obj, saved in containers.values():
                _restore_container(obj, saved)
        for t, arr, stop_gradient in self._tensors:
            if list(t.shape) == list(arr.shape) and np.asarray(t.numpy()).dtype == arr.dtype:
                t.set_value(arr)
            else:
                set_tensor_value(t, arr)
            t.stop_gradient = stop_gradient


@contextmanager
def all_or_nothing(model: Any, *, values: bool = True) -> Iterator[LayerSnapshot]:
    """Run the block on ``model``; on any exception (Ctrl-C included) restore it and re-raise.

    ``values=False``: see :class:`LayerSnapshot`.

    Example:
        >>> import paddle
        >>> net = paddle.nn.Linear(2, 2)
        >>> with all_or_nothing(net):
        ...     net.weight.set_value(net.weight * 2)   # kept: the block ended normally
    """
    snap = LayerSnapshot(model, values=values)
    try:
        yield snap
    except BaseException:
        snap.restore()
        raise


def in_place(func: F | None = None, *, values: bool = True) -> Any:
    """Decorator: an in-place verb whose first argument is the model runs under :func:`all_or_nothing`.

    ``@in_place`` or ``@in_place(values=False)`` (see :class:`LayerSnapshot`).

    Example:
        >>> @in_place
        ... def double_(model):
        ...     for p in model.parameters():
        ...         p.set_value(p * 2)
        ...     return model
    """

    if func is None:
        return functools.partial(in_place, values=values)

    @functools.wraps(func)
    def wrapper(model: Any, *args: Any, **kwargs: Any) -> Any:
        paddle = require_paddle()
        if not isinstance(model, paddle.nn.Layer):
            return func(model, *args, **kwargs)  # the verb itself says what it expects
        with all_or_nothing(model, values=values):
            return func(model, *args, **kwargs)

    return wrapper
