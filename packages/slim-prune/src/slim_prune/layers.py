"""Per-layer shrinking handlers: one small class per layer type.

A handler knows which parameter axes of its layer carry the output channels and
which carry the input channels, slices them in place (the Parameter objects keep
their identity, so names and hooks survive), and fixes the layer's attributes
(``_out_channels``, ``_groups``, ``_num_features``, ...) so the layer still runs,
trains and exports with ``paddle.jit.save``.

Contract (after Torch-Pruning's layer pruners):

- ``prune_out(layer, keep)`` / ``prune_in(layer, keep)``: keep only the given
  output / input channel indices;
- ``count_out(layer)`` / ``count_in(layer)``: current channel counts;
- ``sync(layer)``: re-derive the attributes from the parameter shapes (used after
  the graph-driven pruner sliced parameters axis by axis, and when a saved
  pruned spec is loaded).

Example:
    >>> import paddle
    >>> conv = paddle.nn.Conv2D(3, 8, 3)
    >>> handler_for(conv).prune_out(conv, [0, 2, 5])
    >>> list(conv.weight.shape), conv._out_channels
    ([3, 3, 3, 3], 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from slim_core import Registry, UnsupportedOpError
from slim_core.rollback import set_tensor_value

__all__ = [
    "LayerHandler",
    "ConvHandler",
    "ConvTransposeHandler",
    "LinearHandler",
    "BatchNormHandler",
    "LayerNormHandler",
    "GroupNormHandler",
    "PReLUHandler",
    "EmbeddingHandler",
    "HANDLERS",
    "handler_for",
    "slice_param",
    "set_param_value",
    "register_handler",
]

HANDLERS: Registry = Registry("layer handler")


set_param_value = set_tensor_value  # the shape-changing write lives in slim_core.rollback, which restores with it


def slice_param(layer: Any, name: str, axis: int, keep: Sequence[int]) -> None:
    """Keep only indices ``keep`` of ``layer.<name>`` along ``axis`` (in place)."""
    param = getattr(layer, name, None)
    if param is None:
        return
    arr = np.asarray(param.numpy())
    set_param_value(param, np.take(arr, np.asarray(list(keep), dtype=np.int64), axis=axis))


class LayerHandler:
    """Base handler: ``out_params``/``in_params`` list ``(param_name, axis)`` pairs."""

    out_params: tuple[tuple[str, int], ...] = ()
    in_params: tuple[tuple[str, int], ...] = ()

    def out_axes(self, layer: Any) -> list[tuple[str, int]]:
        return [(n, a) for n, a in self.out_params if getattr(layer, n, None) is not None]

    def in_axes(self, layer: Any) -> list[tuple[str, int]]:
        return [(n, a) for n, a in self.in_params if getattr(layer, n, None) is not None]

    def count_out(self, layer: Any) -> int:
        name, axis = self.out_axes(layer)[0]
        return int(getattr(layer, name).shape[axis])

    def count_in(self, layer: Any) -> int:
        axes = self.in_axes(layer)
        if not axes:
            return self.count_out(layer)
        name, axis = axes[0]
        return int(getattr(layer, name).shape[axis])

    def prune_out(self, layer: Any, keep: Sequence[int]) -> None:
        for name, axis in self.out_axes(layer):
            slice_param(layer, name, axis, keep)
        self.sync(layer)

    def prune_in(self, layer: Any, keep: Sequence[int]) -> None:
        axes = self.in_axes(layer)
        if not axes:  # channel-wise layers (norms, depthwise convs): in == out
            return self.prune_out(layer, keep)
        for name, axis in axes:
            slice_param(layer, name, axis, keep)
        self.sync(layer)
        return None

    def sync(self, layer: Any) -> None:
        """Re-derive attributes from parameter shapes. The base has none to fix."""

    def attributes(self, layer: Any) -> dict[str, Any]:
        """The shape-related attributes, as recorded in a saved pruned spec."""
        return {}


def register_handler(*layer_types: str) -> Any:
    """Class decorator: register a handler for layer class names (the MRO is searched)."""

    def deco(cls: type[LayerHandler]) -> type[LayerHandler]:
        inst = cls()
        for t in layer_types:
            HANDLERS.register(t, overwrite=True)(inst)
        return cls

    return deco


def handler_for(layer: Any, *, required: bool = True) -> LayerHandler | None:
    """The handler of ``layer`` found by its class or a base class name.

    Raises:
        UnsupportedOpError: no handler knows the layer (when ``required``).
    """
    for cls in type(layer).__mro__:
        if cls.__name__ in HANDLERS:
            return HANDLERS[cls.__name__]
    if required:
        raise UnsupportedOpError(
            f"slim-prune has no shrinking handler for layer type {type(layer).__name__}; "
            "register one with slim_prune.layers.register_handler"
        )
    return None


def _is_depthwise(layer: Any) -> bool:
    return int(layer._groups) > 1 and int(layer._groups) == int(layer._in_channels)


@register_handler("_ConvNd")
class ConvHandler(LayerHandler):
    """Conv1D/2D/3D: weight ``[out, in/groups, k...]``; depthwise convs prune in and out together."""

    out_params = (("weight", 0), ("bias", 0))
    in_params = (("weight", 1),)

    def in_axes(self, layer: Any) -> list[tuple[str, int]]:
        if _is_depthwise(layer):
            return []
        if int(layer._groups) != 1:
            raise UnsupportedOpError(
                f"cannot prune the input channels of grouped conv {type(layer).__name__} (groups={layer._groups}) alone; "
                "prune whole groups through prune_()"
            )
        return super().in_axes(layer)

    def count_in(self, layer: Any) -> int:
        return int(layer._in_channels)

    def sync(self, layer: Any) -> None:
        out = int(layer.weight.shape[0])
        if _is_depthwise(layer):
            mult = max(int(layer._out_channels) // int(layer._groups), 1)
            groups = max(out // mult, 1)
            layer._groups = groups
            layer._in_channels = groups
        else:
            layer._in_channels = int(layer.weight.shape[1]) * int(layer._groups)
        layer._out_channels = out

    def attributes(self, layer: Any) -> dict[str, Any]:
        return {"_in_channels": int(layer._in_channels), "_out_channels": int(layer._out_channels), "_groups": int(layer._groups)}


@register_handler("_ConvTransposeNd", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
class ConvTransposeHandler(ConvHandler):
    """Conv*Transpose: weight ``[in, out/groups, k...]``."""

    out_params = (("weight", 1), ("bias", 0))
    in_params = (("weight", 0),)

    def sync(self, layer: Any) -> None:
        if _is_depthwise(layer):
            ch = int(layer.weight.shape[0])
            layer._groups = layer._in_channels = layer._out_channels = ch
            return
        layer._in_channels = int(layer.weight.shape[0])
        layer._out_channels = int(layer.weight.shape[1]) * int(layer._groups)

    def prune_out(self, layer: Any, keep: Sequence[int]) -> None:
        if _is_depthwise(layer):
            slice_param(layer, "weight", 0, keep)
            slice_param(layer, "bias", 0, keep)
            return self.sync(layer)
        return super().prune_out(layer, keep)


@register_handler("Linear")
class LinearHandler(LayerHandler):
    """Linear: weight ``[in, out]``, bias ``[out]``; the layer has no shape attributes."""

    out_params = (("weight", 1), ("bias", 0))
    in_params = (("weight", 0),)


@register_handler("_BatchNormBase", "BatchNorm", "SyncBatchNorm", "_InstanceNormBase")
class BatchNormHandler(LayerHandler):
    """Batch/instance norms: affine parameters and running statistics, all ``[C]``."""

    out_params = (("weight", 0), ("bias", 0), ("scale", 0), ("_mean", 0), ("_variance", 0))

    def sync(self, layer: Any) -> None:
        name, axis = self.out_axes(layer)[0]
        ch = int(getattr(layer, name).shape[axis])
        for attr in ("_num_features", "_num_channels"):
            if hasattr(layer, attr):
                setattr(layer, attr, ch)

    def attributes(self, layer: Any) -> dict[str, Any]:
        return {a: int(getattr(layer, a)) for a in ("_num_features", "_num_channels") if hasattr(layer, a)}


@register_handler("LayerNorm")
class LayerNormHandler(LayerHandler):
    """LayerNorm over the last axis: ``_normalized_shape`` follows the weight."""

    out_params = (("weight", 0), ("bias", 0))

    def sync(self, layer: Any) -> None:
        axes = self.out_axes(layer)
        if axes:
            shape = list(layer._normalized_shape)
            shape[-1] = int(getattr(layer, axes[0][0]).shape[0])
            layer._normalized_shape = shape

    def attributes(self, layer: Any) -> dict[str, Any]:
        return {"_normalized_shape": [int(s) for s in layer._normalized_shape]}


@register_handler("GroupNorm")
class GroupNormHandler(LayerHandler):
    """GroupNorm: channels are removed in whole groups' worth (``_num_groups`` shrinks)."""

    out_params = (("weight", 0), ("bias", 0))

    def channels_per_group(self, layer: Any) -> int:
        return int(layer._num_channels) // int(layer._num_groups)

    def sync(self, layer: Any) -> None:
        ch = int(layer.weight.shape[0]) if layer.weight is not None else int(layer._num_channels)
        per = self.channels_per_group(layer)
        if ch % per:
            raise UnsupportedOpError(f"GroupNorm with {per} channels per group cannot keep {ch} channels; use round_to={per}")
        layer._num_groups = ch // per
        layer._num_channels = ch

    def attributes(self, layer: Any) -> dict[str, Any]:
        return {"_num_channels": int(layer._num_channels), "_num_groups": int(layer._num_groups)}


@register_handler("PReLU")
class PReLUHandler(LayerHandler):
    """PReLU with one slope per channel."""

    out_params = (("_weight", 0),)

    def prune_out(self, layer: Any, keep: Sequence[int]) -> None:
        if int(layer._num_parameters) > 1:
            super().prune_out(layer, keep)

    def sync(self, layer: Any) -> None:
        layer._num_parameters = int(layer._weight.shape[0])

    def attributes(self, layer: Any) -> dict[str, Any]:
        return {"_num_parameters": int(layer._num_parameters)}


@register_handler("Embedding")
class EmbeddingHandler(LayerHandler):
    """Embedding: the output channels are the embedding dimension."""

    out_params = (("weight", 1),)

    def sync(self, layer: Any) -> None:
        dim = int(layer.weight.shape[1])
        layer._embedding_dim = dim
        layer._size = [int(layer.weight.shape[0]), dim]

    def attributes(self, layer: Any) -> dict[str, Any]:
        return {"_embedding_dim": int(layer._embedding_dim)}


@register_handler("MultiHeadAttention")
class MultiHeadAttentionHandler(LayerHandler):
    """paddle.nn.MultiHeadAttention: ``num_heads`` follows the q projection width.

    The q/k/v/out projections are Linear sublayers with their own handlers; this
    handler only keeps the head count consistent after they were sliced (the head
    width ``head_dim`` never changes: heads are removed whole).
    """

    def count_out(self, layer: Any) -> int:
        return int(layer.out_proj.weight.shape[1])

    def sync(self, layer: Any) -> None:
        width = int(layer.q_proj.weight.shape[1])
        if width % int(layer.head_dim):
            raise UnsupportedOpError(f"attention q projection width {width} is not a multiple of head_dim {layer.head_dim}")
        layer.num_heads = width // int(layer.head_dim)

    def attributes(self, layer: Any) -> dict[str, Any]:
        return {"num_heads": int(layer.num_heads)}


__all__.append("MultiHeadAttentionHandler")
