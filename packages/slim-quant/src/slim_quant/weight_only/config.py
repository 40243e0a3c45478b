"""Configs of weight-only quantization and SmoothQuant."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Literal

from slim_core import ConfigError, SlimConfig, check_range

__all__ = ["WeightOnlyConfig", "SmoothQuantConfig", "DEFAULT_SKIP", "name_matches"]

#: Layer-name patterns skipped by default: output heads keep full precision (they are
#: small next to the body and the most sensitive). Embeddings are never Linear layers.
DEFAULT_SKIP: tuple[str, ...] = ("lm_head", "*lm_head*", "classifier", "*.classifier")


def name_matches(name: str, pattern: str) -> bool:
    """Whether a layer path matches a name, an fnmatch pattern, or is inside the layer it names.

    Example:
        >>> name_matches("layers.5.attention.out.linear", "layers.5.attention.out"), name_matches("layers.1.output", "*.output")
        (True, True)
    """
    return fnmatch.fnmatchcase(name, pattern) or name.startswith(pattern + ".")


@dataclass(frozen=True)
class WeightOnlyConfig(SlimConfig):
    """Weight-only quantization of ``paddle.nn.Linear`` layers.

    Args:
        bits: 8 (int8 storage) or 4 (two values per byte).
        group_size: input channels sharing one scale; -1 means one scale per output channel.
            Must divide every quantized layer's input width (checked before any work).
        symmetric: symmetric (scale only) or asymmetric (scale and zero point) grid.
        algo: ``"rtn"`` round to nearest (no data), ``"gptq"`` Hessian-based error
            compensation, ``"awq"`` activation-aware per-channel scaling (both need data).
        skip: layer names or fnmatch patterns (``"encoder.layers.0.*"``) or layer type
            names (``"Linear"`` subclasses) kept in float.
        keep_8bit: layer names or fnmatch patterns quantized to 8 bits per output channel (same algorithm
            and symmetry) instead of ``bits``/``group_size``: the few layers a 4-bit model cannot afford
            (find them by restoring one layer at a time). Recorded in the report as ``kept_8bit``.
        smooth_alpha: when set, SmoothQuant (:func:`smooth_quant_` with this alpha and ``skip``) runs
            first on the calibration data: for runtimes that quantize the activations to int8 inside
            the compressed matmul (OpenVINO's ``DYNAMIC_QUANTIZATION_GROUP_SIZE``, ONNX Runtime's
            ``accuracy_level=4``), whose error comes from activation outlier channels, not weights.
            Linears reading one tensor share the factors (one ``Mul`` in the exported graph).
        damp_percent: GPTQ damping, a fraction of the mean Hessian diagonal.
        block_size: GPTQ columns updated together (lazy batch updates).
        act_order: GPTQ quantizes input channels in order of decreasing Hessian diagonal
            (scales stay in natural group order, so storage is unchanged).
        gptq_clip: GPTQ picks each group's range by a clipping search (shrink ratios 1.0..0.5)
            minimizing the Hessian-diagonal-weighted rounding error, instead of min-max.
        awq_grid: number of exponents tried by the AWQ scale search.
        awq_clip: also search a per-group clipping ratio (AWQ auto-clip).
        max_tokens: input rows kept per layer for AWQ's search (random subsample).
        calib_batches: at most this many calibration batches are used.
        seed: seed of the token subsample.

    Example:
        >>> WeightOnlyConfig(bits=4, group_size=128, algo="gptq").bits
        4
    """

    bits: int = 8
    group_size: int = -1
    symmetric: bool = True
    algo: Literal["rtn", "gptq", "awq"] = "rtn"
    skip: tuple[str, ...] = DEFAULT_SKIP
    keep_8bit: tuple[str, ...] = ()
    smooth_alpha: float | None = None
    damp_percent: float = 0.01
    block_size: int = 128
    act_order: bool = True
    gptq_clip: bool = False
    awq_grid: int = 20
    awq_clip: bool = True
    max_tokens: int = 4096
    calib_batches: int = 32
    seed: int = 0

    def validate(self) -> None:
        if self.bits not in (4, 8):
            raise ConfigError(f"WeightOnlyConfig.bits={self.bits} is not supported; use 4 or 8")
        if self.group_size != -1 and self.group_size < 2:
            raise ConfigError(f"WeightOnlyConfig.group_size={self.group_size} must be -1 (per output channel) or >= 2")
        if self.bits == 4 and self.group_size != -1 and self.group_size % 2:
            raise ConfigError(f"WeightOnlyConfig.group_size={self.group_size} must be even for 4-bit packing")
        if self.keep_8bit and self.bits == 8:
            raise ConfigError("WeightOnlyConfig.keep_8bit is for 4-bit models; with bits=8 every layer is 8-bit already")
        if self.smooth_alpha is not None:
            check_range("WeightOnlyConfig.smooth_alpha", self.smooth_alpha, 0.0, 1.0)
        check_range("WeightOnlyConfig.damp_percent", self.damp_percent, 0.0, 1.0, lo_open=True)
        check_range("WeightOnlyConfig.block_size", self.block_size, 1)
        check_range("WeightOnlyConfig.awq_grid", self.awq_grid, 2)
        check_range("WeightOnlyConfig.max_tokens", self.max_tokens, 16)
        check_range("WeightOnlyConfig.calib_batches", self.calib_batches, 1)

    def grid_of(self, name: str) -> tuple[int, int]:
        """``(bits, group_size)`` of the layer called ``name`` (``keep_8bit`` layers: 8 bits per channel)."""
        return (8, -1) if any(name_matches(name, p) for p in self.keep_8bit) else (self.bits, self.group_size)

    @property
    def needs_data(self) -> bool:
        """Whether the algorithm needs calibration data."""
        return self.algo != "rtn" or self.smooth_alpha is not None


@dataclass(frozen=True)
class SmoothQuantConfig(SlimConfig):
    """SmoothQuant: move activation outliers into the weights before W8A8.

    Each selected Linear gets per-input-channel factors
    ``s = max|x|^alpha / max|w|^(1-alpha)``; the weight rows are multiplied by ``s`` and the
    input is divided by ``s`` by an explicit per-channel multiply in front of the Linear
    (folding it into a preceding LayerNorm is only exact when nothing else, such as a
    residual, reads that LayerNorm, which a Layer cannot prove).

    Args:
        alpha: migration strength in [0, 1]; 0.5 is the paper's default for most models.
        skip: layer names or fnmatch patterns left alone.
        calib_batches: at most this many calibration batches are used.

    Example:
        >>> SmoothQuantConfig(alpha=0.6).alpha
        0.6
    """

    alpha: float = 0.5
    skip: tuple[str, ...] = field(default=DEFAULT_SKIP)
    calib_batches: int = 32

    def validate(self) -> None:
        check_range("SmoothQuantConfig.alpha", self.alpha, 0.0, 1.0)
        check_range("SmoothQuantConfig.calib_batches", self.calib_batches, 1)
