"""Super layers: conv / batch norm / linear whose weights are sliced to the active size.

A super layer holds the weights of its largest version. Its input width is read
from the input tensor; its output width and kernel size are set by the supernet
(``active_out``, ``active_kernel``). A smaller kernel takes the centre of the
largest kernel (as OFA does). After each forward the layer remembers the sizes
it ran with (``last``), which :meth:`to_static` uses to build a plain Paddle
layer holding copies of the sliced weights.
"""

from __future__ import annotations

from typing import Any

import paddle
import paddle.nn.functional as F
from paddle import nn

from slim_core import ConfigError, ExportError

__all__ = ["SuperConv2D", "SuperBatchNorm2D", "SuperLinear"]


def _copy(dst: Any, src: Any) -> None:
    dst.set_value(src.detach().clone())


class SuperConv2D(nn.Layer):
    """A conv whose output channels and (odd) kernel size can shrink; input channels follow the input.

    Args:
        in_channels, out_channels, kernel_size: the largest sizes.
        stride: the stride (fixed).
        depthwise: one filter per channel (groups = channels, output = input channels).
        bias: whether the conv has a bias.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, *, depthwise: bool = False, bias: bool = False
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ConfigError(f"SuperConv2D needs an odd kernel size, got {kernel_size}")
        if depthwise and in_channels != out_channels:
            raise ConfigError(f"a depthwise SuperConv2D needs in_channels == out_channels, got {in_channels} and {out_channels}")
        self.in_channels, self.out_channels, self.kernel_size, self.stride, self.depthwise = (
            in_channels,
            out_channels,
            kernel_size,
            stride,
            depthwise,
        )
        shape = [out_channels, 1 if depthwise else in_channels, kernel_size, kernel_size]
        fan_in = shape[1] * kernel_size * kernel_size
        self.weight = self.create_parameter(shape, default_initializer=nn.initializer.KaimingNormal(fan_in=fan_in))
        self.bias = self.create_parameter([out_channels], is_bias=True) if bias else None
        self.active_out: int | None = None
        self.active_kernel: int | None = None
        self.last: tuple[int, int, int] | None = None

    def _sizes(self, cin: int) -> tuple[int, int, int]:
        k = self.active_kernel or self.kernel_size
        if k > self.kernel_size or k % 2 != 1:
            raise ConfigError(f"kernel size {k} is not an odd size <= {self.kernel_size}")
        if cin > self.in_channels:
            raise ConfigError(f"input has {cin} channels, more than the {self.in_channels} this layer holds")
        cout = cin if self.depthwise else (self.active_out or self.out_channels)
        if cout > self.out_channels:
            raise ConfigError(f"active_out={cout} exceeds the {self.out_channels} channels this layer holds")
        return cin, cout, k

    def sliced_weight(self, cin: int, cout: int, k: int) -> Any:
        s = (self.kernel_size - k) // 2
        w = self.weight[:cout, :, s : s + k, s : s + k] if self.depthwise else self.weight[:cout, :cin, s : s + k, s : s + k]
        return w

    def forward(self, x: Any) -> Any:
        cin, cout, k = self._sizes(int(x.shape[1]))
        self.last = (cin, cout, k)
        bias = self.bias[:cout] if self.bias is not None else None
        return F.conv2d(x, self.sliced_weight(cin, cout, k), bias, stride=self.stride, padding=k // 2, groups=cin if self.depthwise else 1)

    def to_static(self) -> nn.Conv2D:
        """A plain ``nn.Conv2D`` with copies of the weights it last ran with."""
        if self.last is None:
            raise ExportError("SuperConv2D.to_static: the layer has not run yet (run a forward pass with the subnet config first)")
        cin, cout, k = self.last
        conv = nn.Conv2D(
            cin,
            cout,
            k,
            stride=self.stride,
            padding=k // 2,
            groups=cin if self.depthwise else 1,
            bias_attr=None if self.bias is not None else False,
        )
        _copy(conv.weight, self.sliced_weight(cin, cout, k))
        if self.bias is not None:
            _copy(conv.bias, self.bias[:cout])
        return conv


class SuperBatchNorm2D(nn.Layer):
    """Batch norm over the first ``C`` channels of the largest one, ``C`` read from the input.

    In training the batch statistics of the active channels update the running
    statistics of those channels only (momentum as ``nn.BatchNorm2D``).
    """

    def __init__(self, num_features: int, momentum: float = 0.9, epsilon: float = 1e-5):
        super().__init__()
        self.num_features, self.momentum, self.epsilon = num_features, momentum, epsilon
        self.weight = self.create_parameter([num_features], default_initializer=nn.initializer.Constant(1.0))
        self.bias = self.create_parameter([num_features], is_bias=True)
        self._mean = self.create_parameter([num_features], attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0), trainable=False))
        self._variance = self.create_parameter(
            [num_features], attr=paddle.ParamAttr(initializer=nn.initializer.Constant(1.0), trainable=False)
        )
        self.last: int | None = None

    def forward(self, x: Any) -> Any:
        c = int(x.shape[1])
        if c > self.num_features:
            raise ConfigError(f"input has {c} channels, more than the {self.num_features} this norm holds")
        self.last = c
        w, b = self.weight[:c], self.bias[:c]
        if not self.training:
            return F.batch_norm(x, self._mean[:c], self._variance[:c], w, b, training=False, epsilon=self.epsilon)
        if c == self.num_features:  # the fused kernel updates the running statistics in place
            return F.batch_norm(x, self._mean, self._variance, w, b, training=True, momentum=self.momentum, epsilon=self.epsilon)
        mean, var = self._mean[:c].clone(), self._variance[:c].clone()
        y = F.batch_norm(x, mean, var, w, b, training=True, momentum=self.momentum, epsilon=self.epsilon)
        with paddle.no_grad():
            self._mean.set_value(paddle.concat([mean, self._mean[c:]]))
            self._variance.set_value(paddle.concat([var, self._variance[c:]]))
        return y

    def to_static(self) -> nn.BatchNorm2D:
        """A plain ``nn.BatchNorm2D`` with copies of the active channels' parameters and statistics."""
        if self.last is None:
            raise ExportError("SuperBatchNorm2D.to_static: the layer has not run yet")
        c = self.last
        bn = nn.BatchNorm2D(c, momentum=self.momentum, epsilon=self.epsilon)
        for name in ("weight", "bias", "_mean", "_variance"):
            _copy(getattr(bn, name), getattr(self, name)[:c])
        return bn


class SuperLinear(nn.Layer):
    """A linear layer whose output features can shrink; input features follow the input."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = self.create_parameter([in_features, out_features])
        self.bias = self.create_parameter([out_features], is_bias=True) if bias else None
        self.active_out: int | None = None
        self.last: tuple[int, int] | None = None

    def forward(self, x: Any) -> Any:
        cin = int(x.shape[-1])
        cout = self.active_out or self.out_features
        if cin > self.in_features or cout > self.out_features:
            raise ConfigError(f"SuperLinear holds {self.in_features}->{self.out_features}, asked for {cin}->{cout}")
        self.last = (cin, cout)
        return F.linear(x, self.weight[:cin, :cout], self.bias[:cout] if self.bias is not None else None)

    def to_static(self) -> nn.Linear:
        if self.last is None:
            raise ExportError("SuperLinear.to_static: the layer has not run yet")
        cin, cout = self.last
        lin = nn.Linear(cin, cout, bias_attr=None if self.bias is not None else False)
        _copy(lin.weight, self.weight[:cin, :cout])
        if self.bias is not None:
            _copy(lin.bias, self.bias[:cout])
        return lin
