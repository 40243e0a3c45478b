"""OFA: progressive shrinking with in-place distillation from the largest subnet.

Training runs in phases; each phase makes more dimensions elastic:
``"largest"`` (only the largest subnet trains), ``"kernel"`` (kernel sizes
sampled), ``"depth"`` (+ depths), ``"width"`` (+ widths and expand ratios).
Each step trains the largest subnet on the labels, then ``subnets_per_step``
sampled subnets on the labels and on the largest subnet's soft predictions
(a slim-distill loss, ``"kl"`` by default), and applies the summed gradients
once (the sandwich rule of in-place distillation).

Example:
    >>> from slim_nas import OFA, OFAConfig, OFAMobileNetV2
    >>> ofa = OFA(OFAMobileNetV2(in_channels=1, input_size=8), OFAConfig(steps_per_phase=20))   # doctest: +SKIP
    >>> history = ofa.train([(x, y)])                                                           # doctest: +SKIP
    >>> small = ofa.export(ofa.space().smallest(), calib_data=[(x, y)])                          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import paddle
from paddle import nn

from slim_core import Batches, ConfigError, SlimConfig, check_choice, check_range, progress
from slim_distill.losses import LOSSES
from slim_nas._data import cycle
from slim_nas.ofa.supernet import Supernet
from slim_nas.space import SearchSpace

__all__ = ["OFA", "OFAConfig", "PHASES", "recalibrate_bn"]

PHASES = ("largest", "kernel", "depth", "width")
# which config keys become elastic in each phase (suffix match on "stage{i}.<key>")
_PHASE_KEYS = {"largest": (), "kernel": ("kernel",), "depth": ("depth",), "width": ("width", "expand")}


@dataclass(frozen=True)
class OFAConfig(SlimConfig):
    """How the supernet is trained.

    Attributes:
        phases: progressive-shrinking phases in order (from ``PHASES``).
        steps_per_phase: optimizer steps per phase.
        subnets_per_step: sampled subnets trained per step besides the largest.
        learning_rate: Adam learning rate.
        distill_loss: slim-distill loss name for in-place distillation (``"kl"``); ``"none"`` turns it off.
        distill_weight: weight of the distillation loss of sampled subnets.
        label_weight: weight of the label loss of sampled subnets.
        temperature: softening temperature of the distillation loss.
        seed: seed of the subnet sampling.
    """

    phases: tuple[str, ...] = PHASES
    steps_per_phase: int = 100
    subnets_per_step: int = 2
    learning_rate: float = 1e-3
    distill_loss: str = "kl"
    distill_weight: float = 1.0
    label_weight: float = 1.0
    temperature: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        if not self.phases:
            raise ConfigError("OFAConfig.phases is empty; give some of " + ", ".join(PHASES))
        for i, p in enumerate(self.phases):
            check_choice(f"OFAConfig.phases[{i}]", p, PHASES)
        check_range("OFAConfig.steps_per_phase", self.steps_per_phase, 1)
        check_range("OFAConfig.subnets_per_step", self.subnets_per_step, 0)
        check_range("OFAConfig.learning_rate", self.learning_rate, 0, lo_open=True)
        check_range("OFAConfig.temperature", self.temperature, 0, lo_open=True)
        check_range("OFAConfig.distill_weight", self.distill_weight, 0)
        check_range("OFAConfig.label_weight", self.label_weight, 0)
        if self.distill_loss != "none":
            try:
                LOSSES.get(self.distill_loss)  # looked up now: losses registered after import are found
            except ConfigError as exc:
                raise ConfigError(f"OFAConfig.distill_loss: {exc} (or 'none' to turn distillation off)") from exc


def _distill_loss(name: str) -> Callable[[Any, Any, float], Any]:
    """The slim-distill loss ``name`` as ``fn(student, teacher, temperature)``."""
    entry = LOSSES.get(name)
    if "temperature" in entry.param_names():
        return lambda s, t, temp: entry.fn(s, t, temperature=temp)
    return lambda s, t, temp: entry.fn(s, t)


def recalibrate_bn(model: nn.Layer, data: Any, n_batches: int = 10) -> nn.Layer:
    """Re-estimate the BatchNorm running statistics of ``model`` on ``n_batches`` batches (in place).

    Subnets share batch-norm statistics in the supernet; the statistics of one
    subnet are re-estimated with a cumulative average before it is evaluated.
    """
    bns = [m for m in model.sublayers() if isinstance(m, nn.layer.norm._BatchNormBase)]
    if not bns:
        return model
    old_m = [bn._momentum for bn in bns]
    was_training = model.training
    for bn in bns:
        bn._mean.set_value(paddle.zeros_like(bn._mean))
        bn._variance.set_value(paddle.ones_like(bn._variance))
    model.train()
    with paddle.no_grad():
        for i, inputs in enumerate(Batches(data, limit=n_batches)):
            for bn in bns:
                bn._momentum = i / (i + 1.0)  # running = average of the batch statistics so far
            model(paddle.to_tensor(inputs["x"]))
    for bn, m in zip(bns, old_m):
        bn._momentum = m
    if not was_training:
        model.eval()
    return model


class OFA:
    """Once-for-all supernet wrapper: progressive shrinking training, subnet sampling and export.

    Args:
        supernet: a :class:`~slim_nas.ofa.Supernet` (``OFAMobileNetV2``, ``OFAResNet`` or your own subclass).
        config: an :class:`OFAConfig`.
        loss_fn: label loss ``(logits, labels) -> scalar`` (cross-entropy by default).
    """

    def __init__(self, supernet: Supernet, config: OFAConfig | None = None, *, loss_fn: Callable[[Any, Any], Any] | None = None):
        if not isinstance(supernet, Supernet):
            raise ConfigError(
                f"OFA needs a Supernet (OFAMobileNetV2, OFAResNet or a Supernet subclass), got {type(supernet).__name__}; "
                "convert your model with slim_nas.to_supernet(model, input_shape) or build slim_nas.OFAMobileNetV2 / OFAResNet"
            )
        self.supernet = supernet
        self.config = config or OFAConfig()
        self.loss_fn = loss_fn or nn.CrossEntropyLoss()
        self._rng = np.random.default_rng(self.config.seed)
        self._kd = _distill_loss(self.config.distill_loss) if self.config.distill_loss != "none" else None

    def space(self) -> SearchSpace:
        """The search space of the supernet's subnets."""
        return self.supernet.space()

    def sample(self, phase: str = "width", rng: np.random.Generator | None = None) -> dict[str, Any]:
        """A random subnet config where only the dimensions elastic in ``phase`` (and earlier ones) vary."""
        check_choice("phase", phase, PHASES)
        rng = rng if rng is not None else self._rng
        elastic = {k for p in PHASES[: PHASES.index(phase) + 1] for k in _PHASE_KEYS[p]}
        space = self.space()
        cfg = space.largest()
        for name, dom in space.domains.items():
            if name.rsplit(".", 1)[-1] in elastic:
                cfg[name] = dom.sample(rng)
        return cfg

    def train(self, data: Any, *, optimizer: Any = None) -> list[dict[str, float]]:
        """Train the supernet with progressive shrinking and in-place distillation.

        Args:
            data: re-iterable ``(inputs, labels)`` batches (list, DataLoader); cycled as needed.
            optimizer: a Paddle optimizer over the supernet's parameters (Adam by default).

        Returns:
            Per phase: ``{"phase", "steps", "largest_loss", "subnet_loss"}`` (mean over the last 10 steps).
        """
        cfg = self.config
        net = self.supernet
        opt = optimizer or paddle.optimizer.Adam(learning_rate=cfg.learning_rate, parameters=net.parameters())
        largest = self.space().largest()
        batches = cycle(data)
        history = []
        net.train()
        try:
            for phase in cfg.phases:
                big_losses, sub_losses = [], []
                for _ in progress(range(cfg.steps_per_phase), desc=f"ofa {phase}"):
                    x, y = next(batches)
                    net.set_config(largest)
                    logits = net(x)
                    loss = self.loss_fn(logits, y)
                    loss.backward()
                    big_losses.append(float(loss))
                    if phase != "largest":
                        soft = logits.detach()
                        for _ in range(cfg.subnets_per_step):
                            net.set_config(self.sample(phase))
                            out = net(x)
                            sub = cfg.label_weight * self.loss_fn(out, y)
                            if self._kd is not None:
                                sub = sub + cfg.distill_weight * self._kd(out, soft, cfg.temperature)
                            sub.backward()
                            sub_losses.append(float(sub))
                    opt.step()
                    opt.clear_grad()
                history.append(
                    {
                        "phase": phase,
                        "steps": cfg.steps_per_phase,
                        "largest_loss": float(np.mean(big_losses[-10:])),
                        "subnet_loss": float(np.mean(sub_losses[-10:])) if sub_losses else float("nan"),
                    }
                )
        finally:
            net.set_config(largest)
        return history

    def export(self, config: Mapping[str, Any] | None = None, *, calib_data: Any = None, n_calib_batches: int = 10) -> nn.Layer:
        """The subnet ``config`` as a plain Layer with copied weights (BN re-estimated on ``calib_data`` if given)."""
        model = self.supernet.export(config)
        if calib_data is not None:
            recalibrate_bn(model, calib_data, n_calib_batches)
        return model

    def evaluate(self, config: Mapping[str, Any], eval_fn: Callable[[nn.Layer], float], *, calib_data: Any = None) -> float:
        """``eval_fn`` applied to the exported subnet ``config``."""
        return float(eval_fn(self.export(config, calib_data=calib_data)))
