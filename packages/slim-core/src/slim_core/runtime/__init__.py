"""Inference runtimes behind one small contract, shared by every slim package.

:func:`open_runner` loads a model file on a registered runtime and returns a
:class:`Runner` (``run(arrays) -> outputs``). Built in: ``"paddle"`` (Paddle
Inference, oneDNN, its INT8 switch), ``"onnxruntime"`` and ``"openvino"``; the
optional ones are imported only when a runner is opened, and a missing one is a
:class:`~slim_core.errors.MissingExtraError` with the install command.

Example:
    >>> from slim_core.runtime import installed_runtimes, open_runner   # doctest: +SKIP
    >>> installed_runtimes()                                           # doctest: +SKIP
    ['paddle', 'onnxruntime', 'openvino']
    >>> runner = open_runner("out/model.onnx", "onnxruntime", threads=2)  # doctest: +SKIP
    >>> outputs = runner.run([x])                                       # doctest: +SKIP
"""

from slim_core.runtime import onnxruntime as _onnxruntime  # noqa: F401  (registers "onnxruntime")
from slim_core.runtime import openvino as _openvino  # noqa: F401  (registers "openvino")
from slim_core.runtime import paddle as _paddle  # noqa: F401  (registers "paddle")
from slim_core.runtime.base import (
    RUNTIMES,
    InputInfo,
    Runner,
    RuntimeInfo,
    cache_dir,
    installed_runtimes,
    model_format,
    open_runner,
    register_runtime,
    runtime_available,
)
from slim_core.runtime.convert import paddle_to_onnx, quiet_stdout
from slim_core.runtime.openvino import PrecisionReport, precision_report

__all__ = [
    "RUNTIMES",
    "InputInfo",
    "Runner",
    "RuntimeInfo",
    "register_runtime",
    "open_runner",
    "runtime_available",
    "installed_runtimes",
    "model_format",
    "cache_dir",
    "paddle_to_onnx",
    "quiet_stdout",
    "PrecisionReport",
    "precision_report",
]
