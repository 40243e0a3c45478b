"""``QATLayer``: a Conv2D / Linear with trainable fake quantization and optional BN folding.

With a BatchNorm folded in (conv -> BN proven on the traced program), the layer follows
the train-friendly scheme of Jacob et al. (2018): the weight is scaled by
``gamma / sqrt(running_var + eps)`` before it is fake-quantized, the conv output is
scaled back, and the BN then normalizes with batch statistics while training (so BN keeps
learning) or with its running statistics once frozen / in eval mode. Frozen, the layer
computes exactly ``conv(x_q, Q(w * s)) + (b - mean) * s + beta``: the folded INT8 model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F

from slim_quant.layers import QuantedLayer, weight_axis
from slim_quant.qat.config import QATConfig
from slim_quant.qat.quanters import QUANTERS, _world_size

__all__ = ["QATLayer", "qat_layers"]


def _output_view(t: Any, ndim: int) -> Any:
    """Per-channel values broadcast along the channel axis (1) of an NCHW conv output."""
    return t.reshape([1, -1] + [1] * (ndim - 2))


class QATLayer(paddle.nn.Layer):
    """Fake-quantized wrapper used during QAT.

    Args:
        inner: the float Conv2D or Linear (kept as ``self.inner``, parameters shared).
        name: its path in the model.
        config: the :class:`QATConfig`.
        bn: a BatchNorm2D that directly follows ``inner`` (folded), or None.
    """

    def __init__(self, inner: Any, name: str, config: QATConfig, bn: Any = None) -> None:
        super().__init__()
        self.inner = inner
        self.layer_name = name
        self.bn = bn
        self.axis = weight_axis(inner)
        out_ch = int(inner.weight.shape[self.axis])
        self.weight_quanter = QUANTERS.get(config.weight_quanter)(bits=config.weight_bits, channels=out_ch, axis=self.axis)
        self.act_quanter = QUANTERS.get(config.activation_quanter)(bits=config.activation_bits, decay=config.ema_decay)
        self.freeze_bn_after = config.freeze_bn_after
        self.register_buffer("steps", paddle.zeros([1], dtype="float32"))

    # BN folding -------------------------------------------------------------
    @property
    def bn_frozen(self) -> bool:
        return self.bn is not None and self.freeze_bn_after is not None and float(self.steps.numpy()[0]) >= self.freeze_bn_after

    def bn_factor(self) -> Any:
        """``gamma / sqrt(running_var + eps)`` per output channel."""
        bn = self.bn
        gamma = bn.weight if bn.weight is not None else paddle.ones_like(bn._mean)
        return gamma / paddle.sqrt(bn._variance + bn._epsilon)

    def _channel_view(self, t: Any, ndim: int) -> Any:
        shape = [1] * ndim
        shape[self.axis] = -1
        return t.reshape(shape)

    def folded_weight(self) -> Any:
        """The weight that gets quantized (BN scale folded in when a BN is attached)."""
        w = self.inner.weight
        if self.bn is None:
            return w
        return w * self._channel_view(self.bn_factor(), w.ndim)

    def folded_bias(self) -> np.ndarray | None:
        """Bias of the deploy model (BN shift folded in, running statistics)."""
        b = self.inner.bias.numpy() if self.inner.bias is not None else None
        if self.bn is None:
            return b
        s = self.bn_factor().numpy()
        beta = self.bn.bias.numpy() if self.bn.bias is not None else 0.0
        return ((0.0 if b is None else b) - self.bn._mean.numpy()) * s + beta

    def _sync_bn_stats(self) -> None:
        """Average BN running statistics across ranks (Paddle's BN keeps them per process)."""
        n = _world_size()
        if n > 1:
            import paddle.distributed as dist

            with paddle.no_grad():
                for buf in (self.bn._mean, self.bn._variance):
                    t = buf.clone()
                    dist.all_reduce(t)
                    buf.set_value(t / n)

    # forward ----------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        xq = self.act_quanter(x)
        wq = self.weight_quanter(self.folded_weight())
        y = QuantedLayer.forward_with_weight(self, xq, wq)  # type: ignore[arg-type]  # uses only self.inner
        if self.bn is None:
            return y
        frozen = self.bn_frozen
        if self.training:
            self.steps.set_value(self.steps + 1)
        s = _output_view(self.bn_factor(), y.ndim)
        if self.inner.bias is not None:
            b = _output_view(self.inner.bias, y.ndim)
            y = (y - b) / s + b
        else:
            y = y / s
        if self.training and not frozen:
            y = self.bn(y)
            self._sync_bn_stats()
            return y
        bn = self.bn
        return F.batch_norm(y, bn._mean, bn._variance, bn.weight, bn.bias, training=False, epsilon=bn._epsilon, data_format=bn._data_format)

    def extra_repr(self) -> str:
        return f"{self.layer_name}, bn_folded={self.bn is not None}"


def qat_layers(model: Any) -> dict[str, QATLayer]:
    """The :class:`QATLayer` wrappers of ``model`` by their original layer path."""
    return {m.layer_name: m for _, m in model.named_sublayers() if isinstance(m, QATLayer)}
