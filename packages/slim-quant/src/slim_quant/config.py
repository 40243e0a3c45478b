"""Typed configuration of post-training quantization.

Example:
    >>> cfg = PTQConfig(calibrator="kl", skip_layers=("fc",))
    >>> PTQConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from slim_core.config import SlimConfig, check_range
from slim_core.errors import ConfigError
from slim_quant.calibrators import CALIBRATORS
from slim_quant.primitives import check_bits

__all__ = ["PTQConfig", "ReconstructionConfig", "QUANTIZABLE_TYPES"]

#: layer class names quantized by default (paddle.nn); ops on the runtime side follow the weights
QUANTIZABLE_TYPES: tuple[str, ...] = ("Conv2D", "Linear")


@dataclass(frozen=True)
class ReconstructionConfig(SlimConfig):
    """Learned rounding after calibration (AdaRound / QDrop / BRECQ).

    Attributes:
        method: ``"adaround"`` (layer by layer, inputs from the float model),
            ``"qdrop"`` (layer by layer, inputs from the already quantized model, each activation value
            randomly kept in float with probability ``drop_prob``) or ``"brecq"`` (block by block: the
            rounding of all quantized layers of a block is learned jointly so that the block's output,
            with its inner activations fake-quantized, matches the float block; inputs from the already
            quantized model, QDrop's random drop applied inside the block when ``drop_prob > 0``).
        iters: optimisation steps per layer (or block); 200-500 is enough on a CPU for small models.
        lr: Adam learning rate of the rounding variables.
        reg_weight: weight of the rounding regulariser that pushes each weight to a hard up/down choice.
        batches: calibration batches kept as reconstruction data.
        drop_prob: QDrop probability of keeping an activation in float (``"qdrop"`` and ``"brecq"``;
            ``0`` gives plain BRECQ).
        blocks: ``"brecq"`` only: sublayer paths reconstructed as blocks (e.g. ``"layer1.0"``); empty:
            found automatically (the deepest sublayers that hold at least two quantized layers, e.g.
            ResNet's BasicBlock or MobileNetV2's InvertedResidual). Quantized layers outside every block
            are reconstructed alone.
    """

    method: Literal["adaround", "qdrop", "brecq"] = "adaround"
    iters: int = 300
    lr: float = 1e-2
    reg_weight: float = 0.01
    batches: int = 4
    drop_prob: float = 0.5
    blocks: tuple[str, ...] = ()

    def validate(self) -> None:
        check_range("ReconstructionConfig.iters", self.iters, 1, 100_000)
        check_range("ReconstructionConfig.lr", self.lr, 0.0, 10.0, lo_open=True)
        check_range("ReconstructionConfig.reg_weight", self.reg_weight, 0.0, None)
        check_range("ReconstructionConfig.batches", self.batches, 1, 10_000)
        check_range("ReconstructionConfig.drop_prob", self.drop_prob, 0.0, 1.0)
        if self.blocks and self.method != "brecq":
            raise ConfigError(f"ReconstructionConfig.blocks is only used by method='brecq', not {self.method!r}")
        if len(set(self.blocks)) != len(self.blocks):
            raise ConfigError(f"ReconstructionConfig.blocks names a block twice: {list(self.blocks)}")


@dataclass(frozen=True)
class PTQConfig(SlimConfig):
    """Post-training quantization settings.

    Attributes:
        calibrator: activation calibrator name in :data:`slim_quant.CALIBRATORS`
            (``abs_max``, ``avg``, ``percentile``, ``kl``, ``mse`` or your own).
        percentile: the percentile used by ``calibrator="percentile"``.
        weight_calibrator: ``"abs_max"`` or ``"mse"`` (clip ratio that minimises the weight error).
        weight_granularity: ``"per_channel"`` (default, one threshold per output channel) or ``"per_tensor"``.
        weight_bits: weight bit width (2..8; export to INT8 runtimes needs 8).
        activation_bits: activation bit width (8).
        quantize_types: layer classes to quantize (``paddle.nn`` class names).
        skip_layers: sublayer paths kept in float (e.g. ``"fc"``, ``"features.0.0"``); unknown names are an error.
        skip_types: layer class names kept in float.
        fold_bn: fold BatchNorm into the preceding conv/linear before quantizing.
        bias_correction: correct each layer's bias for the mean output shift its quantized weights cause.
        reconstruction: learned rounding (AdaRound / QDrop / BRECQ, see :class:`ReconstructionConfig`), or None.
        calib_batches: at most this many calibration batches are used (and kept for export).
        max_metric_drop: with ``eval_fn``, keep the most sensitive layers in float until the
            metric drop is at most this (absolute, in the metric's unit); None disables.
        higher_is_better: direction of the metric returned by ``eval_fn``.
    """

    calibrator: str = "percentile"
    percentile: float = 99.99
    weight_calibrator: Literal["abs_max", "mse"] = "abs_max"
    weight_granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    weight_bits: int = 8
    activation_bits: int = 8
    quantize_types: tuple[str, ...] = QUANTIZABLE_TYPES
    skip_layers: tuple[str, ...] = ()
    skip_types: tuple[str, ...] = ()
    fold_bn: bool = True
    bias_correction: bool = False
    reconstruction: ReconstructionConfig | None = None
    calib_batches: int = 32
    max_metric_drop: float | None = None
    higher_is_better: bool = True

    def validate(self) -> None:
        CALIBRATORS.get(self.calibrator)  # unknown names raise ConfigError with the known ones
        check_range("PTQConfig.percentile", self.percentile, 50.0, 100.0)
        check_bits(self.weight_bits, "PTQConfig.weight_bits")
        check_bits(self.activation_bits, "PTQConfig.activation_bits", (8,))
        check_range("PTQConfig.calib_batches", self.calib_batches, 1, 100_000)
        check_range("PTQConfig.max_metric_drop", self.max_metric_drop, 0.0, None)
        if not self.quantize_types:
            raise ConfigError("PTQConfig.quantize_types is empty: nothing would be quantized")
