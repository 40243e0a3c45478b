"""Weight-only and LLM quantization of Linear layers: int8 / int4 group-wise with RTN,
GPTQ and AWQ, packed storage, ONNX export for ONNX Runtime / OpenVINO, SmoothQuant for W8A8.

Example:
    >>> import numpy as np, paddle
    >>> from slim_quant.weight_only import WeightOnlyConfig, quantize_weight_only_
    >>> model = paddle.nn.Sequential(paddle.nn.Linear(64, 32), paddle.nn.ReLU(), paddle.nn.Linear(32, 4))
    >>> data = [np.random.rand(8, 64).astype("float32") for _ in range(2)]
    >>> _ = quantize_weight_only_(model, WeightOnlyConfig(bits=4, group_size=32, algo="awq"), calib_data=data)
    >>> model[0].bits
    4
"""

from slim_quant.weight_only.api import (
    SmoothedLinear,
    WeightOnlyReport,
    load_weight_only_,
    model_bytes,
    quantize_weight_only_,
    smooth_quant_,
)
from slim_quant.weight_only.awq import awq_quantize
from slim_quant.weight_only.config import SmoothQuantConfig, WeightOnlyConfig
from slim_quant.weight_only.gptq import HessianAccumulator, gptq_quantize
from slim_quant.weight_only.layer import WeightOnlyLinear
from slim_quant.weight_only.onnx_export import WeightOnlyExportResult, export_weight_only
from slim_quant.weight_only.packing import QuantizedWeight, dequantize, pack_int4, quantize_groups, unpack_int4

__all__ = [
    "WeightOnlyConfig",
    "SmoothQuantConfig",
    "quantize_weight_only_",
    "load_weight_only_",
    "export_weight_only",
    "WeightOnlyExportResult",
    "smooth_quant_",
    "model_bytes",
    "WeightOnlyLinear",
    "SmoothedLinear",
    "WeightOnlyReport",
    "QuantizedWeight",
    "quantize_groups",
    "dequantize",
    "pack_int4",
    "unpack_int4",
    "gptq_quantize",
    "awq_quantize",
    "HessianAccumulator",
]
