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


def get_sublayer(model: Any, path: str) -> Any:
    """The sublayer at dotted ``path`` (``""`` is the model itself); KeyError names the missing part."""
    layer = model
    for part in path.split(".") if path else []:
        layer = layer._sub_layers[part]
    return layer


def set_sublayer(model: Any, path: str, new: Any) -> None:
    """Replace the sublayer at dotted ``path`` by ``new`` in place."""
    parent_path, _, name = path.rpartition(".")
    parent = get_sublayer(model, parent_path)
    parent._sub_layers[name] = new
    # keep a plain attribute (if any) pointing at the same object as the registry entry
    if name in parent.__dict__:
        parent.__dict__[name] = new
