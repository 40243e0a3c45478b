"""The runner contract and the runtime registry.

A *runner* is one model loaded on one inference runtime (Paddle Inference,
ONNX Runtime, OpenVINO, ...): it knows its input and output names and runs numpy
arrays. Runtimes are registered in :data:`RUNTIMES` by :func:`register_runtime`,
so a new runtime is one class in one module, and every package (slim-deploy's
``Predictor``, slim-analysis's latency, slim-quant's export checks, slim-auto)
opens models through :func:`open_runner` the same way.

Example:
    >>> from slim_core.runtime import open_runner                               # doctest: +SKIP
    >>> runner = open_runner("out/model.onnx", "openvino", threads=2)           # doctest: +SKIP
    >>> (logits,) = runner.run([x])                                             # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from slim_core.config import check_choice
from slim_core.errors import ConfigError, ModelLoadError
from slim_core.extras import available, require
from slim_core.model_io import check_model_files

__all__ = [
    "InputInfo",
    "Runner",
    "RuntimeInfo",
    "RUNTIMES",
    "register_runtime",
    "open_runner",
    "runtime_available",
    "installed_runtimes",
    "model_format",
    "cache_dir",
]

_SUFFIX_FORMAT = {".onnx": "onnx", ".pdmodel": "paddle-legacy", ".json": "paddle"}


@dataclass(frozen=True)
class InputInfo:
    """A model input: name, shape (``None`` for dynamic or unknown sizes) and dtype (None when unknown)."""

    name: str
    shape: tuple[int | None, ...] | None
    dtype: str | None


class Runner:
    """One model loaded on one runtime.

    Subclasses set :attr:`input_names`, :attr:`output_names` and :attr:`infos` in
    ``__init__`` and implement :meth:`run`.

    Attributes:
        runtime: registry name of the runtime (``"paddle"``, ``"onnxruntime"``, ``"openvino"``).
        model_file: the file that was loaded.
        format: its format (``"paddle"``, ``"paddle-legacy"`` or ``"onnx"``).
        threads: CPU threads the runtime was told to use.
    """

    runtime: ClassVar[str] = ""

    def __init__(self, model_file: Path, threads: int) -> None:
        self.model_file = Path(model_file)
        self.format = _SUFFIX_FORMAT.get(self.model_file.suffix, "")
        self.threads = int(threads)
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.infos: list[InputInfo] = []
        self._fed: list[np.ndarray] = []

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run on arrays in input order; returns every output as numpy."""
        raise NotImplementedError

    def feed(self, arrays: Sequence[np.ndarray]) -> None:
        """Hand inputs to the runtime once, for :meth:`run_fed` (kernel-only timing)."""
        self._fed = [np.ascontiguousarray(a) for a in arrays]

    def run_fed(self) -> None:
        """Run on the inputs given to :meth:`feed`; runtimes that can skip the copies do."""
        self.run(self._fed)

    def describe(self) -> str:
        """One line: runtime, file, threads."""
        return f"{self.runtime} running {self.model_file.name} with {self.threads} thread(s)"

    def close(self) -> None:
        """Release the runtime's resources (the object is unusable afterwards)."""

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.run(arrays)


@dataclass(frozen=True)
class RuntimeInfo:
    """A registered runtime.

    Attributes:
        name: registry key, e.g. ``"openvino"``.
        module: the Python module it needs (checked with :func:`~slim_core.extras.available`).
        extra: the extra that brings it in slim packages (``"onnx"``, ``"openvino"``; empty when none).
        reads: model formats it loads directly (``"paddle"``, ``"paddle-legacy"``, ``"onnx"``).
        factory: ``factory(model_file, *, params_file, threads, int8, **options) -> Runner``.
        description: one line for help texts.
    """

    name: str
    module: str
    extra: str
    reads: tuple[str, ...]
    factory: Callable[..., Runner]
    description: str


RUNTIMES: dict[str, RuntimeInfo] = {}
"""Registered runtimes by name (filled by :func:`register_runtime`); add your own with the decorator."""


def register_runtime(
    name: str, *, module: str, extra: str, reads: Sequence[str], description: str
) -> Callable[[type[Runner]], type[Runner]]:
    """Class decorator: register a :class:`Runner` subclass under ``name``.

    Example:
        >>> @register_runtime("myrt", module="myrt", extra="myrt", reads=("onnx",), description="my runtime")  # doctest: +SKIP
        ... class MyRunner(Runner): ...
    """

    def deco(cls: type[Runner]) -> type[Runner]:
        cls.runtime = name
        RUNTIMES[name] = RuntimeInfo(name, module, extra, tuple(reads), cls, description)
        return cls

    return deco


def runtime_available(name: str) -> bool:
    """Whether runtime ``name`` is registered and its module is installed (checked without importing it)."""
    info = RUNTIMES.get(name)
    return info is not None and available(info.module)


def installed_runtimes() -> list[str]:
    """Registered runtimes whose module is installed, in registration order."""
    return [n for n in RUNTIMES if runtime_available(n)]


def model_format(model_file: str | os.PathLike[str]) -> str:
    """``"onnx"``, ``"paddle-legacy"`` or ``"paddle"`` from the model file's suffix.

    Raises:
        ModelLoadError: an unknown suffix.
    """
    suffix = Path(model_file).suffix
    if suffix not in _SUFFIX_FORMAT:
        raise ModelLoadError(f"{model_file}: unknown model file type {suffix!r}; expected one of {', '.join(_SUFFIX_FORMAT)}")
    return _SUFFIX_FORMAT[suffix]


def open_runner(
    model_file: str | os.PathLike[str],
    runtime: str,
    *,
    params_file: str | os.PathLike[str] | None = None,
    threads: int = 1,
    int8: bool = False,
    package: str | None = None,
    **options: Any,
) -> Runner:
    """Load ``model_file`` on ``runtime``.

    Args:
        model_file: ``.onnx``, legacy ``.pdmodel`` or PIR ``.json`` (a Paddle model's
            ``.pdiparams`` is found next to it unless ``params_file`` is given).
        runtime: a key of :data:`RUNTIMES` (``"paddle"``, ``"onnxruntime"``, ``"openvino"``).
        threads: CPU threads.
        int8: ask for the runtime's INT8 path where it has a switch (Paddle Inference's oneDNN INT8).
        package: the slim distribution asking, so a missing extra names ``pip install '<package>[<extra>]'``.
        options: runtime-specific settings (Paddle: ``mkldnn``; OpenVINO: ``precision``, ``cache``).

    Raises:
        ConfigError: unknown runtime, bad thread count, or a format the runtime cannot read directly.
        MissingExtraError: the runtime's package is not installed.
        ModelLoadError: the runtime cannot load the model.
    """
    check_choice("runtime", runtime, tuple(RUNTIMES))
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads={threads!r} must be a positive integer")
    info = RUNTIMES[runtime]
    path = Path(model_file)
    fmt = model_format(path)
    if fmt not in info.reads:
        raise ConfigError(
            f"{runtime} cannot read a {fmt} model ({path.name}) directly; it reads {', '.join(info.reads)} (convert it first)"
        )
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    require(info.module, package=package, extra=info.extra or None, what=f"the {runtime} runtime")
    params = Path(params_file) if params_file is not None else (path.with_suffix(".pdiparams") if fmt != "onnx" else None)
    check_model_files(path, params)  # a damaged file is a ModelLoadError here, never a crash or wrong outputs
    return info.factory(path, params_file=params, threads=threads, int8=int8, **options)


def cache_dir(name: str) -> Path | None:
    """A slim-owned cache folder (``$SLIM_CACHE_DIR`` or ``~/.cache/slim``), created on demand; None when not writable."""
    root = os.environ.get("SLIM_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "slim")
    path = Path(root) / name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None
