"""Turn a user's Layer into a supernet: elastic kernels and elastic widths from the model graph.

:func:`to_supernet` copies the model (the input is never changed), replaces its
``nn.Conv2D`` / ``nn.BatchNorm2D`` / ``nn.Linear`` layers by super layers holding
the same weights, and names the elastic dimensions:

- ``"<conv path>.kernel"`` for every conv with an odd kernel larger than 1 and
  "same" padding (smaller kernels take the centre of the trained one);
- ``"group<id>.width"`` for every channel group of the model graph
  (``slim_core.trace(...).channel_groups()``, the groups pruning uses) that can be
  narrowed by keeping its first channels: not frozen, no concat offsets, every
  producing layer a conv or linear layer. A width choice keeps that fraction of
  the group's channels in every coupled layer at once (residual adds included).

Example:
    >>> net = to_supernet(paddle.vision.models.resnet18(num_classes=10), [1, 3, 32, 32])   # doctest: +SKIP
    >>> sub = net.export(net.space().smallest())                                         # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import paddle
from paddle import nn

from slim_core import ConfigError
from slim_core.layers import set_sublayer
from slim_nas.ofa.layers import SuperBatchNorm2D, SuperConv2D, SuperLinear
from slim_nas.ofa.supernet import Supernet
from slim_nas.space import Choice, SearchSpace

__all__ = ["ElasticModel", "to_supernet"]

_SUPER = (SuperConv2D, SuperBatchNorm2D, SuperLinear)


def _as_int(v: Any) -> int | None:
    if isinstance(v, int):
        return v
    if isinstance(v, (list, tuple)) and len(set(v)) == 1 and isinstance(v[0], int):
        return v[0]
    return None


def _convertible_conv(conv: nn.Conv2D) -> bool:
    k = _as_int(conv._kernel_size)
    pad = _as_int(conv._padding) if not isinstance(conv._padding, str) else None
    dil = _as_int(conv._dilation)
    cin, cout, groups = conv._in_channels, conv._out_channels, conv._groups
    return (
        k is not None
        and k % 2 == 1
        and pad == k // 2
        and dil == 1
        and conv._data_format == "NCHW"
        and _as_int(conv._stride) is not None
        and (groups == 1 or (groups == cin == cout))
    )


def _super_conv(conv: nn.Conv2D) -> SuperConv2D:
    k, cin, cout = _as_int(conv._kernel_size), conv._in_channels, conv._out_channels
    sc = SuperConv2D(cin, cout, k, _as_int(conv._stride), depthwise=conv._groups > 1, bias=conv.bias is not None)
    sc.weight.set_value(conv.weight.detach().clone())
    if conv.bias is not None:
        sc.bias.set_value(conv.bias.detach().clone())
    return sc


def _super_bn(bn: nn.BatchNorm2D) -> SuperBatchNorm2D:
    sb = SuperBatchNorm2D(int(bn.weight.shape[0]), momentum=bn._momentum, epsilon=bn._epsilon)
    for name in ("weight", "bias", "_mean", "_variance"):
        getattr(sb, name).set_value(getattr(bn, name).detach().clone())
    return sb


def _super_linear(lin: nn.Linear) -> SuperLinear:
    cin, cout = (int(s) for s in lin.weight.shape)
    sl = SuperLinear(cin, cout, bias=lin.bias is not None)
    sl.weight.set_value(lin.weight.detach().clone())
    if lin.bias is not None:
        sl.bias.set_value(lin.bias.detach().clone())
    return sl


class ElasticModel(Supernet):
    """A user model with super layers; built by :func:`to_supernet`."""

    def __init__(
        self, model: nn.Layer, input_shape: Sequence[int], domains: dict[str, Any], kernels: dict[str, str], widths: dict[str, tuple]
    ):
        super().__init__()
        self.model = model
        self.input_shape = [1, *list(input_shape)[1:]]
        self._space = SearchSpace(domains)
        self._kernels = kernels  # key -> conv path
        self._widths = widths  # key -> (group size, [producer paths])
        self._config = self._space.largest()

    def space(self) -> SearchSpace:
        return self._space

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def _apply(self, config: dict[str, Any]) -> None:
        layers = dict(self.model.named_sublayers())
        for key, path in self._kernels.items():
            layers[path].active_kernel = config[key]
        for key, (size, producers) in self._widths.items():
            active = max(1, int(round(size * config[key])))
            for path in producers:
                layers[path].active_out = active

    def _plain(self) -> nn.Layer:
        plain = copy.deepcopy(self.model)
        for path, layer in self.model.named_sublayers():
            if isinstance(layer, _SUPER):
                if layer.last is None:  # not reached by the forward pass: keep its full size
                    raise ConfigError(f"layer {path!r} did not run on the example input; it cannot be exported")
                set_sublayer(plain, path, layer.to_static())
        return plain


def to_supernet(
    model: nn.Layer,
    input_shape: Sequence[int],
    *,
    kernel_choices: Sequence[int] | None = (3, 5, 7),
    width_choices: Sequence[float] | None = (0.5, 0.75, 1.0),
) -> ElasticModel:
    """Convert ``model`` into a supernet with elastic kernel sizes and widths (the input model is not modified).

    Args:
        model: a ``paddle.nn.Layer`` taking one image tensor.
        input_shape: ``[N, C, H, W]`` of one input (used to trace the graph and to export).
        kernel_choices: kernel sizes offered to each eligible conv (those up to its own size);
            None turns elastic kernels off.
        width_choices: width fractions offered to each eligible channel group; None turns
            elastic widths off.

    Returns:
        An :class:`ElasticModel` (a :class:`Supernet`) to train with :class:`~slim_nas.OFA`.

    Raises:
        ConfigError: nothing in the model can be made elastic, or a width choice is outside (0, 1].
    """
    if not isinstance(model, nn.Layer):
        raise ConfigError(f"to_supernet needs a paddle.nn.Layer, got {type(model).__name__}")
    if width_choices is not None and any(not 0 < w <= 1 for w in width_choices):
        raise ConfigError(f"width_choices must be fractions in (0, 1], got {list(width_choices)}")
    shape = [int(s) for s in input_shape]
    work = copy.deepcopy(model)
    layers = dict(work.named_sublayers())
    converted: dict[str, nn.Layer] = {}
    for path, layer in layers.items():
        if type(layer) is nn.Conv2D and _convertible_conv(layer):
            converted[path] = _super_conv(layer)
        elif type(layer) is nn.BatchNorm2D and layer._data_format == "NCHW":
            converted[path] = _super_bn(layer)
        elif type(layer) is nn.Linear:
            converted[path] = _super_linear(layer)

    domains: dict[str, Any] = {}
    kernels: dict[str, str] = {}
    if kernel_choices:
        for path, sl in converted.items():
            if isinstance(sl, SuperConv2D) and sl.kernel_size > 1:
                ks = sorted({k for k in kernel_choices if k <= sl.kernel_size and k % 2 == 1} | {sl.kernel_size})
                if len(ks) > 1:
                    kernels[f"{path}.kernel"] = path
                    domains[f"{path}.kernel"] = Choice(ks)
    widths: dict[str, tuple] = {}
    if width_choices:
        widths = _elastic_groups(model, shape, converted)
        for key in widths:
            domains[key] = Choice(sorted(set(width_choices) | {1.0}))
    if not domains:
        raise ConfigError(
            "nothing in this model can be made elastic: no conv with an odd 'same'-padded kernel > 1 and no channel group "
            "that can be narrowed (see slim_core.trace(model).channel_groups() for the frozen reasons)"
        )
    for path, sl in converted.items():
        set_sublayer(work, path, sl)
    net = ElasticModel(work, shape, domains, kernels, widths)
    net.set_config(net.space().largest())
    if not model.training:
        net.eval()
    return net


def _elastic_groups(model: nn.Layer, shape: list[int], converted: dict[str, nn.Layer]) -> dict[str, tuple]:
    """Channel groups that keeping the first channels narrows correctly: key -> (size, producer conv/linear paths)."""
    from slim_core.graph import trace

    graph = trace(model, input_spec=[paddle.static.InputSpec(shape, "float32", "x")])
    out: dict[str, tuple] = {}
    for group in graph.channel_groups():
        if group.frozen or group.size < 2:
            continue
        if any(m.offset != 0 or m.layer not in converted for m in group.members):
            continue
        producers = []
        ok = True
        for m in group.members:
            sl = converted[m.layer]
            if m.kind != "out" or m.param != "weight":
                continue
            if isinstance(sl, SuperConv2D) and not sl.depthwise and m.axis == 0:
                producers.append(m.layer)
            elif isinstance(sl, SuperLinear) and m.axis == 1:
                producers.append(m.layer)
            elif not (isinstance(sl, SuperBatchNorm2D) or (isinstance(sl, SuperConv2D) and sl.depthwise)):
                ok = False  # batch norms and depthwise convs follow their input; anything else cannot be sliced
        if ok and producers:
            out[f"group{group.id}.width"] = (group.size, sorted(set(producers)))
    return out
