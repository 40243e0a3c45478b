"""Fake-quantized wrappers that stand in for Conv2D / Linear after ``quantize_``.

A :class:`QuantedLayer` keeps the original layer (and its parameter names, so
the exported program still finds them) and runs in one of three modes:

- ``"observe"``: float forward, the input is fed to the activation calibrator;
- ``"quant"``: the input is fake-quantized with the calibrated threshold and the
  weight is replaced by its dequantized integer codes (what the INT8 kernel computes);
- ``"float"``: the plain float layer (used to export the float program the INT8
  program is built from).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F

from slim_quant.calibrators import Calibrator
from slim_quant.primitives import dequantize_np, fake_quant, quantize_np, weight_thresholds

__all__ = ["QuantedLayer", "weight_axis", "quanted_layers"]


def weight_axis(layer: Any) -> int:
    """Output-channel axis of a layer's weight (Paddle Linear stores ``[in, out]``)."""
    if isinstance(layer, paddle.nn.Linear):
        return 1
    if isinstance(layer, (paddle.nn.Conv2DTranspose, paddle.nn.Conv1DTranspose)):
        return 1
    return 0


class QuantedLayer(paddle.nn.Layer):
    """A Conv/Linear layer with INT-k weights and a calibrated INT8 input.

    Args:
        layer: the float layer (kept as ``self.inner``).
        name: its path in the model (for reports).
        calibrator: the activation calibrator (fed in ``"observe"`` mode).
        weight_bits / act_bits: bit widths.
        per_channel: per-output-channel weight thresholds (else one per tensor).
        weight_method: ``"abs_max"`` or ``"mse"``.
    """

    def __init__(
        self,
        layer: Any,
        name: str,
        calibrator: Calibrator,
        *,
        weight_bits: int = 8,
        act_bits: int = 8,
        per_channel: bool = True,
        weight_method: str = "abs_max",
    ) -> None:
        super().__init__()
        self.inner = layer
        self.layer_name = name
        self.calibrator = calibrator
        self.weight_bits = weight_bits
        self.act_bits = act_bits
        self.axis = weight_axis(layer)
        self.per_channel = per_channel
        self.weight_method = weight_method
        self.mode = "observe"
        self.act_threshold: float | None = None
        self.w_threshold: np.ndarray | None = None
        self.w_codes: np.ndarray | None = None
        self.act_enabled = True
        self.drop_prob = 0.0  # QDrop: probability of keeping an input value in float (in training mode)
        self.weight_override: Any = None  # reconstruction: a (soft-rounded) weight used instead of the codes
        self._w_deq: Any = None

    # calibration results ---------------------------------------------------
    def finalize_activation(self) -> None:
        """Take the threshold from the calibrator."""
        self.act_threshold = float(self.calibrator.threshold())

    def quantize_weight(self) -> None:
        """(Re)compute weight thresholds and integer codes from the current float weight."""
        w = self.inner.weight.numpy()
        axis = self.axis if self.per_channel else None
        self.w_threshold = weight_thresholds(w, axis, method=self.weight_method, bits=self.weight_bits)  # type: ignore[arg-type]
        self.set_weight_codes(quantize_np(w, self.w_threshold, self.weight_bits, axis))

    def set_weight_codes(self, codes: np.ndarray) -> None:
        self.w_codes = codes.astype("int8")
        axis = self.axis if self.per_channel else None
        self._w_deq = paddle.to_tensor(dequantize_np(self.w_codes, self.w_threshold, self.weight_bits, axis))

    def channel_thresholds(self) -> np.ndarray:
        """Per-output-channel thresholds (a per-tensor threshold repeated)."""
        assert self.w_threshold is not None
        n = int(self.inner.weight.shape[self.axis])
        return np.broadcast_to(np.asarray(self.w_threshold, "float32").reshape(-1), (n,)).copy()

    # forward ----------------------------------------------------------------
    def forward_with_weight(self, x: Any, w: Any) -> Any:
        """The wrapped op with weight ``w`` (used by reconstruction)."""
        inner = self.inner
        if isinstance(inner, paddle.nn.Linear):
            return F.linear(x, w, inner.bias)
        if isinstance(inner, paddle.nn.Conv2D):
            if getattr(inner, "_padding_mode", "zeros") != "zeros":
                x = F.pad(x, inner._reversed_padding_repeated_twice, mode=inner._padding_mode, data_format=inner._data_format)
                padding = 0
            else:
                padding = inner._padding
            return F.conv2d(x, w, inner.bias, inner._stride, padding, inner._dilation, inner._groups, inner._data_format)
        raise TypeError(f"{type(inner).__name__} has no fake-quant forward")

    def quant_input(self, x: Any) -> Any:
        if not self.act_enabled or self.act_threshold is None:
            return x
        xq = fake_quant(x, self.act_threshold, self.act_bits)
        if self.drop_prob > 0.0 and self.training:
            keep = paddle.cast(paddle.rand(x.shape) < self.drop_prob, x.dtype)
            xq = keep * x + (1.0 - keep) * xq
        return xq

    def forward(self, x: Any) -> Any:
        if self.mode == "float":
            return self.inner(x)
        if self.mode == "observe":
            self.calibrator.observe(x.numpy())
            return self.inner(x)
        w = self._w_deq if self.weight_override is None else self.weight_override
        return self.forward_with_weight(self.quant_input(x), w)

    def extra_repr(self) -> str:
        return f"{self.layer_name}, mode={self.mode}, w{self.weight_bits}a{self.act_bits}, act_threshold={self.act_threshold}"


def quanted_layers(model: Any) -> dict[str, QuantedLayer]:
    """The :class:`QuantedLayer` wrappers of ``model`` by their original layer path."""
    return {m.layer_name: m for _, m in model.named_sublayers() if isinstance(m, QuantedLayer)}
