"""Streamed, layer-by-layer calibration of Linear layers.

The model runs over the calibration batches once per *stage* (Linears reading the same
input tensor, such as q/k/v, form one stage) with hooks on that stage only; the forward
pass stops as soon as the stage has seen its input, and only per-layer statistics (a
Hessian, channel maxima, a bounded row sample) are kept. Layers quantized in earlier
stages are already replaced, so later ones calibrate on the inputs the quantized model
really produces, and memory stays near one layer's activations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from slim_core import Batches, ConfigError, DataError, SlimError, UnsupportedOpError, progress, require_paddle
from slim_quant.weight_only.config import name_matches

paddle = require_paddle()

__all__ = ["find_linears", "StreamingCalibrator", "load_batches", "RowSampler"]


def _matches(name: str, layer: Any, pattern: str) -> bool:
    return name_matches(name, pattern) or type(layer).__name__ == pattern


def find_linears(
    model: Any, skip: Sequence[str], *, default_skip: Sequence[str] = (), kinds: tuple[type, ...] | None = None
) -> list[tuple[str, Any]]:
    """``(name, layer)`` of every ``paddle.nn.Linear`` not matched by a skip pattern.

    Raises:
        ConfigError: a skip entry without wildcards names no layer (typo guard); entries of
            ``default_skip`` may match nothing.
        UnsupportedOpError: the model has no Linear layer left to quantize.
    """
    kinds = kinds or (paddle.nn.Linear,)
    named = [(n, layer) for n, layer in model.named_sublayers() if n]
    for pattern in skip:
        if pattern in default_skip or any(c in pattern for c in "*?["):
            continue
        if not any(_matches(n, layer, pattern) for n, layer in named):
            from slim_core.registry import closest

            hint = closest(pattern, [n for n, _ in named])
            did = f" (did you mean {hint!r}?)" if hint else ""
            raise ConfigError(f"skip entry {pattern!r} matches no layer name or type in the model{did}")
    found = [(n, layer) for n, layer in named if isinstance(layer, kinds) and not any(_matches(n, layer, p) for p in skip)]
    if not found:
        raise UnsupportedOpError(f"the model has no {'/'.join(k.__name__ for k in kinds)} layer to quantize (after skipping {list(skip)})")
    return found


def load_batches(calib_data: Any, input_names: Sequence[str] | None, limit: int) -> list[dict[str, np.ndarray]]:
    """Validated calibration batches, read once (the calibration re-runs them per stage)."""
    if calib_data is None:
        raise DataError("this algorithm needs calibration data (calib_data=None was given)")
    return [dict(b) for b in Batches(calib_data, input_names, limit=limit)]


class _StopForward(Exception):
    """Raised from a hook to end a forward pass early; never escapes the calibrator."""


class RowSampler:
    """Keep at most ``capacity`` input rows, a uniform random sample of all rows seen."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = capacity
        self.rows: list[np.ndarray] = []
        self.kept = 0
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def add(self, x: np.ndarray) -> None:
        self.seen += x.shape[0]
        self.rows.append(x)
        self.kept += x.shape[0]
        if self.kept > 2 * self.capacity:
            self._shrink()

    def _shrink(self) -> None:
        allx = np.concatenate(self.rows)
        idx = self.rng.choice(allx.shape[0], self.capacity, replace=False)
        self.rows, self.kept = [allx[np.sort(idx)]], self.capacity

    def get(self) -> np.ndarray:
        if self.kept > self.capacity:
            self._shrink()
        return np.concatenate(self.rows)


class StreamingCalibrator:
    """Runs a model over calibration batches with hooks on a few Linears at a time.

    Args:
        model: the dygraph model (set to eval mode while calibrating).
        layers: ``{name: Linear}`` of the layers to calibrate.
        batches: validated batches (dicts of arrays, in ``input_names`` order).
    """

    def __init__(self, model: Any, layers: dict[str, Any], batches: list[dict[str, np.ndarray]]) -> None:
        self.model = model
        self.layers = dict(layers)
        self.batches = batches

    def _run(self, batch_idx: int, batch: dict[str, np.ndarray]) -> None:
        args = [paddle.to_tensor(v) for v in batch.values()]
        try:
            with paddle.no_grad():
                self.model(*args)
        except _StopForward:
            pass
        except SlimError:
            raise
        except Exception as exc:  # Paddle's shape errors are long C++ traces; say which batch broke
            first = str(exc).strip().splitlines()
            raise DataError(f"the model failed on calibration batch {batch_idx}: {first[0] if first else type(exc).__name__}") from exc

    def _check_width(self, name: str, layer: Any, x: Any, batch_idx: int) -> None:
        want = layer.weight.shape[0]
        if x.shape[-1] != want:
            raise DataError(
                f"calibration batch {batch_idx}: layer {name!r} expects inputs of width {want} but received {x.shape[-1]} "
                f"(input shape {list(x.shape)}); check that calib_data matches the model"
            )

    def stages(self) -> tuple[list[list[str]], list[str]]:
        """Stages in call order (layers sharing an input tensor together) and layers never called."""
        calls: list[tuple[str, int]] = []
        hooks = []
        for name, layer in self.layers.items():

            def pre(lyr: Any, inputs: Any, _name: str = name) -> None:
                self._check_width(_name, lyr, inputs[0], 0)
                if _name not in {c[0] for c in calls}:
                    calls.append((_name, id(inputs[0])))

            hooks.append(layer.register_forward_pre_hook(pre))
        was_training = self.model.training
        self.model.eval()
        try:
            self._run(0, self.batches[0])
        finally:
            for h in hooks:
                h.remove()
            if was_training:
                self.model.train()
        stages: list[list[str]] = []
        last_id = None
        for name, tid in calls:
            if stages and tid == last_id:
                stages[-1].append(name)
            else:
                stages.append([name])
            last_id = tid
        called = {c[0] for c in calls}
        return stages, [n for n in self.layers if n not in called]

    def collect(self, names: Iterable[str], observe: Callable[[str, np.ndarray], None]) -> None:
        """Run all batches, calling ``observe(name, rows)`` with each layer's 2-D input rows."""
        names = list(names)
        pending: set[str] = set()
        hooks = []
        batch_idx = 0
        for name in names:
            layer = self.layers[name]

            def pre(lyr: Any, inputs: Any, _name: str = name) -> None:
                x = inputs[0]
                self._check_width(_name, lyr, x, batch_idx)
                observe(_name, x.numpy().reshape(-1, x.shape[-1]))
                pending.discard(_name)
                if not pending:
                    raise _StopForward

            hooks.append(layer.register_forward_pre_hook(pre))
        was_training = self.model.training
        self.model.eval()
        try:
            for batch_idx, batch in enumerate(self.batches):
                pending.update(names)
                self._run(batch_idx, batch)
        finally:
            for h in hooks:
                h.remove()
            if was_training:
                self.model.train()

    def run(self, quantize_stage: Callable[[list[str]], None], desc: str = "calibrate") -> list[str]:
        """Calibrate and quantize stage by stage; returns the names never reached by the data."""
        stages, unused = self.stages()
        if not stages:
            raise DataError("no quantizable layer ran on the calibration data; is calib_data the model's input?")
        for stage in progress(stages, desc=desc):
            quantize_stage(stage)
        return unused
