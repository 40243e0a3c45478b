"""Find and replace sublayers by their ``named_sublayers()`` path.

Every transform that swaps a layer for another (BN folding, re-parameterization,
fake-quant wrappers, weight-only layers, supernet export) goes through these two
functions, so they all resolve paths the same way (``"features.3.conv"``, with
Sequential/LayerList children named by index).

Example:
    >>> import paddle
    >>> net = paddle.nn.Sequential(paddle.nn.Linear(2, 2), paddle.nn.ReLU())
    >>> set_sublayer(net, "1", paddle.nn.Identity())
    >>> type(get_sublayer(net, "1")).__name__
    'Identity'
"""

from __future__ import annotations

from typing import Any

__all__ = ["get_sublayer", "set_sublayer"]


def _resolve(model: Any, path: str) -> tuple[Any, str]:
    """The parent layer of dotted ``path`` and the child's key in its ``_sub_layers``.

    A key may itself contain dots: PaddleClas registers blocks with ``add_sublayer("_blocks.3.", block)``
    (EfficientNet), so ``named_sublayers()`` yields ``"_blocks.3..conv"``. At each level the longest run of
    parts that is a registered key wins.
    """
    parts = path.split(".")
    parent, i = model, 0
    while True:
        for j in range(len(parts), i, -1):
            key = ".".join(parts[i:j])
            if key in parent._sub_layers:
                if j == len(parts):
                    return parent, key
                parent, i = parent._sub_layers[key], j
                break
        else:
            raise KeyError(f"{'.'.join(parts[i:]) or path!r} is not a sublayer of {type(parent).__name__} (path {path!r})")


def get_sublayer(model: Any, path: str) -> Any:
    """The sublayer at dotted ``path`` (``""`` is the model itself); KeyError names the missing part."""
    if not path:
        return model
    parent, key = _resolve(model, path)
    return parent._sub_layers[key]


def set_sublayer(model: Any, path: str, new: Any) -> None:
    """Replace the sublayer at dotted ``path`` by ``new`` in place."""
    parent, name = _resolve(model, path)
    parent._sub_layers[name] = new
    # keep a plain attribute (if any) pointing at the same object as the registry entry
    if name in parent.__dict__:
        parent.__dict__[name] = new
