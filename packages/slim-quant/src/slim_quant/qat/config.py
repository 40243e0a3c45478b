"""Typed configuration of quantization-aware training."""

from __future__ import annotations

from dataclasses import dataclass

from slim_core import ConfigError, SlimConfig, check_range
from slim_quant.calibrators import CALIBRATORS
from slim_quant.primitives import check_bits
from slim_quant.qat.quanters import QUANTERS

__all__ = ["QATConfig"]

_WEIGHT_QUANTERS = ("abs_max", "lsq")


@dataclass(frozen=True)
class QATConfig(SlimConfig):
    """Quantization-aware training settings.

    Attributes:
        weight_bits: weight bit width (2..8; INT8 runtimes need 8).
        activation_bits: activation bit width (8).
        weight_quanter: ``"abs_max"`` (per-channel abs-max, STE) or ``"lsq"`` (learned per-channel step).
        activation_quanter: a name in :data:`slim_quant.qat.QUANTERS`: ``"moving_average_abs_max"``,
            ``"lsq"``, ``"lsq_plus"``, ``"pact"`` or one you registered.
        quantize_types: layer classes to fake-quantize (``Conv2D``, ``Linear``).
        skip_layers: sublayer paths kept in float; unknown names are an error.
        skip_types: layer class names kept in float.
        fold_bn: fold each BatchNorm that directly follows a conv into its fake-quantized
            weight (train-friendly: BN keeps learning until ``freeze_bn_after``).
        freeze_bn_after: training steps after which BN statistics are frozen (BN then uses its
            running statistics, exactly what the folded deploy model computes); None never freezes.
        ema_decay: decay of the moving-average activation ranges.
        init_from_ptq: start activation ranges and weight steps from a PTQ calibration on the
            calibration data (converges much faster than a cold start).
        ptq_calibrator: the PTQ calibrator used by ``init_from_ptq``.

    Example:
        >>> QATConfig(weight_bits=4, activation_quanter="pact").weight_bits
        4
    """

    weight_bits: int = 8
    activation_bits: int = 8
    weight_quanter: str = "abs_max"
    activation_quanter: str = "moving_average_abs_max"
    quantize_types: tuple[str, ...] = ("Conv2D", "Linear")
    skip_layers: tuple[str, ...] = ()
    skip_types: tuple[str, ...] = ()
    fold_bn: bool = True
    freeze_bn_after: int | None = 200
    ema_decay: float = 0.9
    init_from_ptq: bool = False
    ptq_calibrator: str = "percentile"

    def validate(self) -> None:
        check_bits(self.weight_bits, "QATConfig.weight_bits")
        check_bits(self.activation_bits, "QATConfig.activation_bits", (8,))
        if self.weight_quanter not in _WEIGHT_QUANTERS:
            raise ConfigError(f"QATConfig.weight_quanter={self.weight_quanter!r} is not allowed; allowed: {', '.join(_WEIGHT_QUANTERS)}")
        for key, registry in (("activation_quanter", QUANTERS), ("ptq_calibrator", CALIBRATORS)):
            try:
                registry.get(getattr(self, key))  # unknown names raise ConfigError listing the known ones
            except ConfigError as exc:
                raise ConfigError(f"QATConfig.{key}: {exc}") from exc
        for t in self.quantize_types:
            if t not in ("Conv2D", "Linear"):
                raise ConfigError(f"QATConfig.quantize_types: {t!r} is not supported; supported: Conv2D, Linear")
        if not self.quantize_types:
            raise ConfigError("QATConfig.quantize_types is empty: nothing would be quantized")
        check_range("QATConfig.freeze_bn_after", self.freeze_bn_after, 0)
        check_range("QATConfig.ema_decay", self.ema_decay, 0.0, 1.0, hi_open=True)
