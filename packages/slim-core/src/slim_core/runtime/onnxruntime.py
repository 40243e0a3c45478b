"""ONNX Runtime on CPU (the ``onnx`` extras bring it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slim_core.errors import ModelLoadError, error_summary
from slim_core.runtime.base import InputInfo, Runner, register_runtime

__all__ = ["OrtRunner", "ORT_DTYPES"]

ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


@register_runtime("onnxruntime", module="onnxruntime", extra="onnx", reads=("onnx",), description="ONNX Runtime (CPU execution provider)")
class OrtRunner(Runner):
    """An ONNX Runtime session on the CPU execution provider, all graph optimizations on.

    Example:
        >>> r = OrtRunner(Path("model.onnx"), params_file=None, threads=2)   # doctest: +SKIP
    """

    def __init__(self, model_file: Path, *, params_file: Path | None = None, threads: int = 1, int8: bool = False, **_: Any) -> None:
        super().__init__(model_file, threads)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self.sess = ort.InferenceSession(str(model_file), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(f"ONNX Runtime could not load {model_file}: {error_summary(exc)}") from exc
        ins = self.sess.get_inputs()
        self.input_names = [i.name for i in ins]
        self.output_names = [o.name for o in self.sess.get_outputs()]
        self.infos = [
            InputInfo(i.name, tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape), ORT_DTYPES.get(i.type)) for i in ins
        ]

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(self.sess.run(None, dict(zip(self.input_names, arrays))))

    def close(self) -> None:
        self.sess = None
