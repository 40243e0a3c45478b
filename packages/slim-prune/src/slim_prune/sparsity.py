"""Unstructured magnitude sparsity, gradual magnitude pruning (GMP) and N:M sparsity.

Weights stay dense tensors; zeros are kept through training by masks: a gradient
hook zeroes the masked gradients, and :meth:`SparseMasks.attach` re-applies the
masks after every optimizer step (weight decay or momentum cannot revive them).

Example:
    >>> import paddle
    >>> model = paddle.vision.models.mobilenet_v2(scale=0.25, num_classes=10)
    >>> masks = sparsify_(model, SparsityConfig(ratio=0.7, scope="global"))
    >>> opt = paddle.optimizer.Momentum(parameters=model.parameters())
    >>> masks.attach(opt)            # masks hold after every opt.step()
    >>> round(masks.sparsity(), 2)
    0.7
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from slim_core import ConfigError, SlimConfig, check_range, require_paddle
from slim_core.rollback import in_place
from slim_prune._util import check_layer_names

__all__ = [
    "SparsityConfig",
    "NMConfig",
    "GMPSchedule",
    "SparseMasks",
    "GMPPruner",
    "sparsify_",
    "sparsify_nm_",
    "nm_mask",
    "check_nm",
]

DEFAULT_TYPES = ["Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "Linear"]


@dataclass(frozen=True)
class SparsityConfig(SlimConfig):
    """Unstructured magnitude pruning of conv/linear weights.

    Args:
        ratio: fraction in [0, 1) of weights set to zero (per layer or over all layers).
        threshold: instead of a ratio, zero every weight with ``|w| <= threshold``.
        scope: ``"layer"`` (each layer loses ``ratio``) or ``"global"`` (one magnitude cut-off for all).
        layer_types: class names of the layers whose ``weight`` is sparsified.
        ignored_layers: layer names left dense.
    """

    ratio: float | None = None
    threshold: float | None = None
    scope: Literal["layer", "global"] = "layer"
    layer_types: list[str] = field(default_factory=lambda: list(DEFAULT_TYPES))
    ignored_layers: list[str] = field(default_factory=list)

    def validate(self) -> None:
        check_range("SparsityConfig.ratio", self.ratio, 0.0, 1.0, hi_open=True)
        check_range("SparsityConfig.threshold", self.threshold, 0.0)
        if (self.ratio is None) == (self.threshold is None):
            raise ConfigError("SparsityConfig: give exactly one of ratio or threshold")


@dataclass(frozen=True)
class NMConfig(SlimConfig):
    """N:M semi-structured sparsity: in every block of ``m`` consecutive weights along the
    reduction (input-channel) axis at most ``n`` are non-zero (2:4 runs on sparse tensor cores).

    Args:
        n: non-zeros kept per block.
        m: block length.
        layer_types: class names of the layers to sparsify (Linear and convs by default).
        ignored_layers: layer names left dense.
    """

    n: int = 2
    m: int = 4
    layer_types: list[str] = field(default_factory=lambda: ["Conv1D", "Conv2D", "Conv3D", "Linear"])
    ignored_layers: list[str] = field(default_factory=list)

    def validate(self) -> None:
        check_range("NMConfig.m", self.m, 1)
        check_range("NMConfig.n", self.n, 1, self.m)


@dataclass(frozen=True)
class GMPSchedule(SlimConfig):
    """Gradual magnitude pruning (Zhu & Gupta, 2017) over training steps.

    Phases: ``stable_steps`` dense, then ``pruning_steps`` during which sparsity grows
    from ``initial_ratio`` to ``final_ratio`` along a cubic curve (masks updated every
    ``update_every`` steps), then fine-tuning at ``final_ratio``.
    """

    final_ratio: float = 0.8
    initial_ratio: float = 0.0
    stable_steps: int = 0
    pruning_steps: int = 100
    update_every: int = 10

    def validate(self) -> None:
        check_range("GMPSchedule.final_ratio", self.final_ratio, 0.0, 1.0, hi_open=True)
        check_range("GMPSchedule.initial_ratio", self.initial_ratio, 0.0, self.final_ratio)
        check_range("GMPSchedule.stable_steps", self.stable_steps, 0)
        check_range("GMPSchedule.pruning_steps", self.pruning_steps, 1)
        check_range("GMPSchedule.update_every", self.update_every, 1)

    def ratio_at(self, step: int) -> float:
        """Target sparsity at training step ``step`` (0-based)."""
        if step < self.stable_steps:
            return 0.0
        t = min(1.0, (step - self.stable_steps) / self.pruning_steps)
        return self.final_ratio + (self.initial_ratio - self.final_ratio) * (1.0 - t) ** 3


class SparseMasks:
    """Masks of sparsified weights, kept in force during training.

    Attributes:
        masks: ``{layer name: 0/1 float32 array}`` shaped like the layer's weight.
    """

    def __init__(self, model: Any, params: dict[str, Any], masks: dict[str, np.ndarray]) -> None:
        self.model = model
        self.params = params
        self.masks = masks
        self._tensors: dict[str, Any] = {}
        self._hooks: list[Any] = []
        self._optimizers: list[tuple[Any, Any]] = []
        self._refresh()

    def _refresh(self) -> None:
        paddle = require_paddle()
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._tensors = {k: paddle.to_tensor(m) for k, m in self.masks.items()}
        for name, p in self.params.items():
            if not p.stop_gradient:
                mask = self._tensors[name]
                self._hooks.append(p.register_hook(_grad_hook(mask)))
        self.apply()

    def update(self, masks: dict[str, np.ndarray]) -> None:
        """Replace the masks (GMP) and apply them."""
        self.masks = masks
        self._refresh()

    def apply(self) -> None:
        """Multiply every weight by its mask (zeros stay zeros)."""
        paddle = require_paddle()
        with paddle.no_grad():
            for name, p in self.params.items():
                p.set_value(p * self._tensors[name].astype(p.dtype))

    def attach(self, optimizer: Any) -> Any:
        """Re-apply the masks after each ``optimizer.step()``; returns the optimizer."""
        original = optimizer.step

        def step(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            self.apply()
            return out

        optimizer.step = step
        self._optimizers.append((optimizer, original))
        return optimizer

    def remove(self) -> None:
        """Drop the hooks and restore attached optimizers (the zeros stay in the weights)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for opt, original in self._optimizers:
            opt.step = original
        self._optimizers = []

    def sparsity(self, per_layer: bool = False) -> float | dict[str, float]:
        """Measured fraction of zero weights (overall, or per layer)."""
        zeros = {k: int((np.asarray(p.numpy()) == 0).sum()) for k, p in self.params.items()}
        sizes = {k: int(np.prod(p.shape)) for k, p in self.params.items()}
        if per_layer:
            return {k: zeros[k] / sizes[k] for k in zeros}
        return sum(zeros.values()) / max(sum(sizes.values()), 1)


def _grad_hook(mask: Any) -> Callable[[Any], Any]:
    def hook(grad: Any) -> Any:
        return grad * mask.astype(grad.dtype)

    return hook


def _weights(model: Any, layer_types: list[str], ignored: list[str]) -> dict[str, Any]:
    check_layer_names(model, ignored, "ignored_layers")
    types = set(layer_types)
    out = {}
    for name, layer in model.named_sublayers():
        if type(layer).__name__ not in types or any(name == ig or name.startswith(ig + ".") for ig in ignored):
            continue
        w = getattr(layer, "weight", None)
        if w is not None:
            out[name] = w
    if not out:
        raise ConfigError(f"no layer of the types {sorted(types)} to sparsify in this model")
    return out


def _magnitude_masks(params: dict[str, Any], ratio: float | None, threshold: float | None, scope: str) -> dict[str, np.ndarray]:
    mags = {k: np.abs(np.asarray(p.numpy(), dtype=np.float32)) for k, p in params.items()}
    if threshold is not None:
        return {k: (m > threshold).astype("float32") for k, m in mags.items()}
    assert ratio is not None
    if scope == "global":
        flat = np.concatenate([m.ravel() for m in mags.values()])
        k = int(np.floor(flat.size * ratio))
        if k == 0:
            return {n: np.ones_like(m) for n, m in mags.items()}
        cut = np.partition(flat, k - 1)[k - 1]
        masks = {n: (m > cut).astype("float32") for n, m in mags.items()}
        return masks
    out = {}
    for n, m in mags.items():
        k = int(np.floor(m.size * ratio))
        mask = np.ones(m.size, dtype="float32")
        if k:
            mask[np.argsort(m.ravel(), kind="stable")[:k]] = 0.0
        out[n] = mask.reshape(m.shape)
    return out


@in_place
def sparsify_(model: Any, config: SparsityConfig) -> SparseMasks:
    """Zero the smallest-magnitude weights of ``model`` in place and keep them zero.

    Args:
        model: a ``paddle.nn.Layer``.
        config: :class:`SparsityConfig` (ratio or threshold, per layer or global).

    Returns:
        :class:`SparseMasks`; call ``masks.attach(optimizer)`` before training.

    Raises:
        ConfigError: bad config, unknown ignored layer, nothing to sparsify (model unchanged).
    """
    if not isinstance(config, SparsityConfig):
        raise ConfigError(f"config must be a SparsityConfig, got {type(config).__name__}")
    params = _weights(model, config.layer_types, config.ignored_layers)
    return SparseMasks(model, params, _magnitude_masks(params, config.ratio, config.threshold, config.scope))


def _reduction_axis(layer_type: str) -> int:
    # Linear weight is [in, out] (axis 0 is reduced); conv weight is [out, in, k...] (axis 1).
    return 0 if layer_type == "Linear" else 1


def nm_mask(weight: np.ndarray, n: int, m: int, axis: int) -> np.ndarray:
    """0/1 mask keeping the ``n`` largest |w| of every ``m`` consecutive entries along ``axis``.

    A trailing partial block keeps at most ``n`` entries as well.
    """
    w = np.moveaxis(np.abs(np.asarray(weight, dtype=np.float32)), axis, -1)
    length = w.shape[-1]
    pad = (-length) % m
    wp = np.concatenate([w, np.full(w.shape[:-1] + (pad,), -1.0, dtype=np.float32)], axis=-1) if pad else w
    blocks = wp.reshape(-1, m)
    order = np.argsort(-blocks, axis=1, kind="stable")[:, :n]
    mask = np.zeros_like(blocks)
    np.put_along_axis(mask, order, 1.0, axis=1)
    mask = mask.reshape(wp.shape)[..., :length]
    return np.moveaxis(mask, -1, axis).astype("float32")


def _nm_params(model: Any, config: NMConfig) -> Iterator[tuple[str, Any, int]]:
    subs = dict(model.named_sublayers())
    for name, p in _weights(model, config.layer_types, config.ignored_layers).items():
        yield name, p, _reduction_axis(type(subs[name]).__name__)


@in_place
def sparsify_nm_(model: Any, config: NMConfig | None = None) -> SparseMasks:
    """Apply N:M (default 2:4) sparsity to conv and linear weights in place.

    Returns:
        :class:`SparseMasks` (attach it to the optimizer so the pattern survives fine-tuning;
        :func:`check_nm` verifies it).
    """
    config = config or NMConfig()
    if not isinstance(config, NMConfig):
        raise ConfigError(f"config must be an NMConfig, got {type(config).__name__}")
    items = list(_nm_params(model, config))
    masks = {name: nm_mask(p.numpy(), config.n, config.m, axis) for name, p, axis in items}
    return SparseMasks(model, {name: p for name, p, _ in items}, masks)


def check_nm(model: Any, config: NMConfig | None = None) -> dict[str, int]:
    """Blocks violating the N:M pattern per layer (an empty dict means the pattern holds).

    Returns:
        ``{layer name: number of blocks with more than n non-zeros}`` for offending layers.
    """
    config = config or NMConfig()
    bad = {}
    for name, p, axis in _nm_params(model, config):
        w = np.moveaxis(np.asarray(p.numpy()) != 0, axis, -1)
        pad = (-w.shape[-1]) % config.m
        if pad:
            w = np.concatenate([w, np.zeros(w.shape[:-1] + (pad,), dtype=bool)], axis=-1)
        count = int((w.reshape(-1, config.m).sum(axis=1) > config.n).sum())
        if count:
            bad[name] = count
    return bad


class GMPPruner:
    """Gradual magnitude pruning driven by training steps.

    Call :meth:`step` once per training iteration (after ``optimizer.step()``); masks are
    recomputed every ``schedule.update_every`` steps during the pruning phase.

    Example:
        >>> pruner = GMPPruner(model, GMPSchedule(final_ratio=0.8, pruning_steps=200), optimizer=opt)  # doctest: +SKIP
        >>> for batch in data:                                                                           # doctest: +SKIP
        ...     loss.backward(); opt.step(); opt.clear_grad(); pruner.step()
    """

    def __init__(self, model: Any, schedule: GMPSchedule, config: SparsityConfig | None = None, *, optimizer: Any = None) -> None:
        if not isinstance(schedule, GMPSchedule):
            raise ConfigError(f"schedule must be a GMPSchedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.config = config or SparsityConfig(ratio=0.0)
        self.params = _weights(model, self.config.layer_types, self.config.ignored_layers)
        self.current_step = 0
        self.ratio = schedule.ratio_at(0)
        self.masks = SparseMasks(model, self.params, _magnitude_masks(self.params, self.ratio, None, self.config.scope))
        if optimizer is not None:
            self.masks.attach(optimizer)

    def step(self) -> float:
        """Advance one training step; returns the sparsity target now in force."""
        self.current_step += 1
        s = self.current_step
        sched = self.schedule
        in_window = sched.stable_steps <= s <= sched.stable_steps + sched.pruning_steps
        last = s == sched.stable_steps + sched.pruning_steps
        if in_window and ((s - sched.stable_steps) % sched.update_every == 0 or last):
            self.ratio = sched.ratio_at(s)
            self.masks.update(_magnitude_masks(self.params, self.ratio, None, self.config.scope))
        return self.ratio
