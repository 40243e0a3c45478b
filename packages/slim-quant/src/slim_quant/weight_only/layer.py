"""``WeightOnlyLinear``: a Linear whose weight stays packed and is dequantized on the fly.

The packed codes and the scales are buffers, so ``state_dict``, ``paddle.save`` and
``paddle.jit.save`` keep them as int8 / uint8 tensors (a 4-bit layer holds two codes per
byte). The forward pass unpacks with Paddle integer ops, rescales and runs a float
matmul, so it works on every device (Paddle's fused ``weight_only_linear`` has no CPU
kernel in 3.3.1).

Example:
    >>> import paddle
    >>> lin = paddle.nn.Linear(64, 16)
    >>> q = WeightOnlyLinear.from_linear(lin, bits=4, group_size=32)
    >>> list(q(paddle.randn([2, 64])).shape)
    [2, 16]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slim_core import require_paddle
from slim_quant.weight_only.packing import QuantizedWeight, check_group_size, pack_int4, quantize_groups

paddle = require_paddle()
nn = paddle.nn

__all__ = ["WeightOnlyLinear"]


class WeightOnlyLinear(nn.Layer):
    """Linear layer with a packed int8 / int4 weight and per-group scales.

    Args:
        in_features, out_features: shape of the float weight ``[in, out]``.
        bits: 8 or 4.
        group_size: input rows per scale (-1: one group).
        symmetric: whether zero points are stored.
        has_bias: whether the layer adds a bias.
        has_input_scale: whether the input is multiplied by a per-channel vector first
            (AWQ and SmoothQuant scaling).
        dtype: float dtype of scales, bias and output.

    Buffers:
        ``qweight`` (int8 ``[in, out]`` for 8-bit symmetric, uint8 otherwise; 4-bit is
        ``[in // 2, out]``), ``scales`` ``[groups, out]``, ``zeros`` (asymmetric only),
        ``input_scale`` ``[in]`` (when ``has_input_scale``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int = 8,
        group_size: int = -1,
        symmetric: bool = True,
        has_bias: bool = True,
        has_input_scale: bool = False,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        g = check_group_size(in_features, group_size, bits)
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size, self.symmetric = bits, g, symmetric
        groups = in_features // g
        rows = in_features // 2 if bits == 4 else in_features
        qdtype = "int8" if (bits == 8 and symmetric) else "uint8"
        self.register_buffer("qweight", paddle.zeros([rows, out_features], dtype=qdtype))
        self.register_buffer("scales", paddle.ones([groups, out_features], dtype=dtype))
        if symmetric:
            self.zeros = None
        else:
            self.register_buffer("zeros", paddle.zeros([groups, out_features], dtype=dtype))
        if has_input_scale:
            self.register_buffer("input_scale", paddle.ones([in_features], dtype=dtype))
        else:
            self.input_scale = None
        self.bias = self.create_parameter([out_features], dtype=dtype, is_bias=True) if has_bias else None

    # construction ---------------------------------------------------------------
    @classmethod
    def from_quantized(
        cls, q: QuantizedWeight, bias: np.ndarray | None = None, input_scale: np.ndarray | None = None, dtype: str = "float32"
    ) -> WeightOnlyLinear:
        """Build the layer from integer codes and grid (see :mod:`slim_quant.weight_only.packing`)."""
        n_in, n_out = q.codes.shape
        layer = cls(n_in, n_out, q.bits, q.group_size, q.zeros is None, bias is not None, input_scale is not None, dtype)
        layer.load_quantized(q, bias, input_scale)
        return layer

    @classmethod
    def from_linear(cls, linear: Any, bits: int = 8, group_size: int = -1, symmetric: bool = True) -> WeightOnlyLinear:
        """Round-to-nearest quantization of a ``paddle.nn.Linear``."""
        w = linear.weight.numpy()
        q = quantize_groups(w, bits, group_size, symmetric)
        bias = linear.bias.numpy() if getattr(linear, "bias", None) is not None else None
        return cls.from_quantized(q, bias, dtype=str(linear.weight.dtype).replace("paddle.", ""))

    def load_quantized(self, q: QuantizedWeight, bias: np.ndarray | None = None, input_scale: np.ndarray | None = None) -> None:
        """Write codes, grid, bias and input scale into the buffers."""
        codes = q.codes
        if self.bits == 4:
            packed = pack_int4(codes, signed=self.symmetric)
        else:
            packed = codes.astype(np.int8 if self.symmetric else np.uint8)
        self.qweight.set_value(paddle.to_tensor(packed))
        self.scales.set_value(paddle.to_tensor(q.scales.astype(np.float32)).astype(self.scales.dtype))
        if q.zeros is not None:
            self.zeros.set_value(paddle.to_tensor(q.zeros.astype(np.float32)).astype(self.zeros.dtype))
        if bias is not None and self.bias is not None:
            self.bias.set_value(paddle.to_tensor(np.asarray(bias, dtype=np.float32)).astype(self.bias.dtype))
        if input_scale is not None and self.input_scale is not None:
            self.input_scale.set_value(paddle.to_tensor(np.asarray(input_scale, dtype=np.float32)).astype(self.input_scale.dtype))

    # compute --------------------------------------------------------------------
    def codes(self) -> Any:
        """Integer codes ``[in, out]`` as a float tensor (zero point not yet removed)."""
        q = self.qweight
        if self.bits == 4:
            lo = paddle.bitwise_and(q, paddle.full([], 15, dtype="uint8"))
            hi = paddle.bitwise_right_shift(q, paddle.full([], 4, dtype="uint8"))
            q = paddle.stack([lo, hi], axis=1).reshape([self.in_features, self.out_features])
            w = paddle.cast(q, self.scales.dtype)
            return w - 8.0 if self.symmetric else w
        return paddle.cast(q, self.scales.dtype)

    def dequantized_weight(self) -> Any:
        """The float ``[in, out]`` weight the layer computes with (input scale excluded)."""
        groups = self.scales.shape[0]
        w = self.codes().reshape([groups, self.group_size, self.out_features])
        if self.zeros is not None:
            w = w - self.zeros.unsqueeze(1)
        return (w * self.scales.unsqueeze(1)).reshape([self.in_features, self.out_features])

    def forward(self, x: Any) -> Any:
        if self.input_scale is not None:
            x = x * self.input_scale
        return nn.functional.linear(x, self.dequantized_weight(), self.bias)

    def packed_bytes(self) -> int:
        """Bytes of codes, scales, zeros, input scale and bias as stored."""
        total = 0
        for t in (self.qweight, self.scales, self.zeros, self.input_scale, self.bias):
            if t is not None:
                total += int(np.prod(t.shape)) * (1 if t.dtype in (paddle.int8, paddle.uint8) else t.element_size())
        return total

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
            f"group_size={self.group_size}, symmetric={self.symmetric}, input_scale={self.input_scale is not None}"
        )
