"""Paddle Inference on CPU: oneDNN, and its INT8 path for quantized legacy programs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from slim_core._paddle import require_paddle
from slim_core.errors import ModelLoadError, error_summary
from slim_core.runtime.base import InputInfo, Runner, model_format, register_runtime

__all__ = ["PaddleInferenceRunner"]


@register_runtime(
    "paddle",
    module="paddle",
    extra="",
    reads=("paddle", "paddle-legacy"),
    description="Paddle Inference (CPU, oneDNN; INT8 from legacy programs)",
)
class PaddleInferenceRunner(Runner):
    """A Paddle Inference predictor on CPU.

    Args:
        model_file: PIR ``.json`` or legacy ``.pdmodel``.
        params_file: the ``.pdiparams`` file.
        threads: CPU math threads.
        int8: enable oneDNN INT8 (a quantized model runs simulated and slowly without it).
        mkldnn: use oneDNN (when Paddle was built with it).

    Example:
        >>> r = PaddleInferenceRunner(Path("m.json"), params_file=Path("m.pdiparams"), threads=2)   # doctest: +SKIP
    """

    def __init__(self, model_file: Path, *, params_file: Path | None, threads: int = 1, int8: bool = False, mkldnn: bool = True) -> None:
        super().__init__(model_file, threads)
        paddle = require_paddle()
        from paddle import inference

        # a model without parameters has no .pdiparams file; Paddle Inference accepts the missing path
        config = inference.Config(str(model_file), str(params_file or Path(model_file).with_suffix(".pdiparams")))
        config.enable_new_ir(model_format(model_file) == "paddle")
        config.disable_gpu()
        config.disable_glog_info()
        config.set_cpu_math_library_num_threads(threads)
        self.onednn = bool(mkldnn and paddle.base.core.is_compiled_with_mkldnn())
        self.int8 = bool(int8 and self.onednn)
        if self.onednn:
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(16)  # bounded cache of oneDNN primitives across input shapes
            if int8:
                config.enable_mkldnn_int8()
        try:
            self.pred = inference.create_predictor(config)
        except Exception as exc:
            hint = " (Paddle Inference runs INT8 on CPU only from the legacy format: export with format='paddle-legacy')" if int8 else ""
            raise ModelLoadError(f"Paddle Inference could not load {model_file}: {error_summary(exc)}{hint}") from exc
        self.input_names = list(self.pred.get_input_names())
        self.output_names = list(self.pred.get_output_names())
        self._in = [self.pred.get_input_handle(n) for n in self.input_names]
        self._out = [self.pred.get_output_handle(n) for n in self.output_names]
        self.infos = [InputInfo(n, None, None) for n in self.input_names]

    def feed(self, arrays: Sequence[np.ndarray]) -> None:
        for h, a in zip(self._in, arrays):
            h.reshape(list(a.shape))
            h.copy_from_cpu(np.ascontiguousarray(a))

    def run_fed(self) -> None:
        """Run on the fed inputs without copying outputs back: the kernel time alone."""
        self.pred.run()

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.feed(arrays)
        self.pred.run()
        return [h.copy_to_cpu() for h in self._out]

    def describe(self) -> str:
        extra = ", oneDNN INT8" if self.int8 else (", oneDNN" if self.onednn else "")
        return super().describe() + extra

    def close(self) -> None:
        self._in, self._out = [], []
        self.pred = None
