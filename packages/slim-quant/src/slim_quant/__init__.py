"""Post-training quantization, QAT, weight-only and LLM quantization, quantization sensitivity."""

from slim_core._paddle import require_paddle
from slim_quant.__about__ import __version__

require_paddle()

# --- PTQ (issue 5) ---
from slim_quant.calibrators import CALIBRATORS, Calibrator, make_calibrator  # noqa: E402
from slim_quant.config import PTQConfig, ReconstructionConfig  # noqa: E402
from slim_quant.export import ExportQualityWarning, ExportResult, LatencyGuardWarning, export, quantize_inference_model  # noqa: E402
from slim_quant.graph_passes import QDQ_TARGETS  # noqa: E402
from slim_quant.ptq import QuantState, quantize, quantize_  # noqa: E402
from slim_quant.sensitivity import LayerSensitivity, SensitivityReport, quant_sensitivity  # noqa: E402

__all__ = [
    "__version__",
    "CALIBRATORS",
    "Calibrator",
    "make_calibrator",
    "PTQConfig",
    "ReconstructionConfig",
    "quantize_",
    "quantize",
    "QuantState",
    "export",
    "ExportResult",
    "ExportQualityWarning",
    "LatencyGuardWarning",
    "quantize_inference_model",
    "QDQ_TARGETS",
    "quant_sensitivity",
    "SensitivityReport",
    "LayerSensitivity",
]
# --- end PTQ ---

# --- QAT and weight-only (issue 7) ---
from slim_quant.qat import QATConfig, convert, prepare_qat  # noqa: E402
from slim_quant.weight_only import (  # noqa: E402
    SmoothQuantConfig,
    WeightOnlyConfig,
    WeightOnlyLinear,
    export_weight_only,
    load_weight_only_,
    quantize_weight_only_,
    smooth_quant_,
)

__all__ += [
    "QATConfig",
    "prepare_qat",
    "convert",
    "WeightOnlyConfig",
    "SmoothQuantConfig",
    "WeightOnlyLinear",
    "quantize_weight_only_",
    "load_weight_only_",
    "export_weight_only",
    "smooth_quant_",
]
# --- end QAT and weight-only ---
