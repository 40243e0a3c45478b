"""Typed configs of a distillation: which tensors to compare, with which loss and weight.

The dict form (and its YAML) is::

    {"logits": {"loss": "kl", "temperature": 4.0, "weight": 1.0},
     "pairs": [{"student": "features.6", "teacher": "layer2", "loss": "mse", "weight": 1.0}]}

``student`` / ``teacher`` are ``named_sublayers()`` paths, or patterns: ``*``
matches within one path segment, ``?`` one character, ``[1-4]`` a class,
``**`` any number of segments. A pattern pair expands to the sublayers it
matches on each side, paired in model order (the counts must agree), so
``{"student": "layer?", "teacher": "layer?"}`` pairs every residual stage.

Example:
    >>> cfg = DistillConfig.from_dict({"logits": {"loss": "kl", "temperature": 4.0}})
    >>> cfg.logits.temperature
    4.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from slim_core.config import SlimConfig, check_range
from slim_core.errors import ConfigError
from slim_distill.losses import LOSSES

__all__ = ["LogitsConfig", "PairConfig", "DistillConfig", "DMLConfig", "is_pattern"]

_PATTERN_CHARS = set("*?[")


def is_pattern(name: str) -> bool:
    """Whether a layer name is a pattern (holds ``*``, ``?`` or ``[``)."""
    return any(c in _PATTERN_CHARS for c in name)


def _check_loss(where: str, loss: str, temperature: float | None, params: dict[str, float], weight: float) -> None:
    entry = LOSSES.get(loss)
    if not (weight >= 0 and math.isfinite(weight)):
        raise ConfigError(f"{where}.weight={weight!r} must be a finite number >= 0")
    if temperature is not None:
        if not temperature > 0:
            raise ConfigError(f"{where}.temperature={temperature!r} must be > 0 (it divides the logits; typical values are 1 to 8)")
        if "temperature" not in entry.param_names():
            raise ConfigError(f"{where}: loss {loss!r} takes no temperature (losses that do: {', '.join(_with_temperature())})")
        if "temperature" in params:
            raise ConfigError(f"{where}: give the temperature once, as the field, not also in params")
    entry.check_params(loss, params)
    for key, value in params.items():
        if key == "temperature" and not value > 0:
            raise ConfigError(f"{where}.params.temperature={value!r} must be > 0")


def _loss_kwargs(cfg: Any) -> dict[str, Any]:
    """Keyword arguments for the loss function: ``params`` plus the temperature when set."""
    return dict(cfg.params, **({"temperature": cfg.temperature} if cfg.temperature is not None else {}))


def _with_temperature() -> list[str]:
    return sorted(n for n, e in LOSSES.items() if "temperature" in e.param_names())


@dataclass(frozen=True)
class LogitsConfig(SlimConfig):
    """The loss between the two models' outputs (their logits).

    Args:
        loss: a name in :data:`~slim_distill.LOSSES`; logit losses are ``"kl"`` and ``"dkd"``.
        temperature: softening temperature (``> 0``) of ``kl`` / ``dkd``; None keeps the loss default (1 for kl, 4 for dkd).
        weight: factor of this term in :meth:`Distiller.loss`.
        params: further keyword arguments of the loss (``{"alpha": 1, "beta": 8}`` for dkd).
        student_index: which output to use when the student returns several (None: the only one).
        teacher_index: the same for the teacher.
    """

    loss: str = "kl"
    temperature: float | None = None
    weight: float = 1.0
    params: dict[str, float] = field(default_factory=dict)
    student_index: int | None = None
    teacher_index: int | None = None

    def validate(self) -> None:
        _check_loss("logits", self.loss, self.temperature, self.params, self.weight)
        if LOSSES.get(self.loss).arity != 1:
            raise ConfigError(f"logits: loss {self.loss!r} compares pairs of layers and cannot be used on model outputs")

    kwargs = _loss_kwargs


@dataclass(frozen=True)
class PairConfig(SlimConfig):
    """One student tensor compared with one teacher tensor.

    Args:
        student: sublayer path (or pattern) in the student; a list of two paths for ``fsp``.
        teacher: sublayer path (or pattern) in the teacher; a list of two for ``fsp``.
        loss: a name in :data:`~slim_distill.LOSSES` (default ``"mse"``).
        weight: factor of this term in :meth:`Distiller.loss`.
        temperature: for losses that take one (``kl`` on intermediate logits).
        params: further keyword arguments of the loss.
        student_io: hook the layer's ``"output"`` (default) or its ``"input"``.
        teacher_io: the same for the teacher.
        student_index: which item when the hooked value is a tuple (multi-output layer, or
            the positional inputs); None takes the only one.
        teacher_index: the same for the teacher.
        student_call: which call when the layer runs several times in one forward (0-based,
            negative counts from the end); None requires exactly one call.
        teacher_call: the same for the teacher.
        adaptor: ``"auto"`` inserts a trainable 1x1 conv / linear on the student side when
            widths differ; ``"none"`` makes a width mismatch an error.
    """

    student: str | list[str]
    teacher: str | list[str]
    loss: str = "mse"
    weight: float = 1.0
    temperature: float | None = None
    params: dict[str, float] = field(default_factory=dict)
    student_io: Literal["output", "input"] = "output"
    teacher_io: Literal["output", "input"] = "output"
    student_index: int | None = None
    teacher_index: int | None = None
    student_call: int | None = None
    teacher_call: int | None = None
    adaptor: Literal["auto", "none"] = "auto"

    def validate(self) -> None:
        where = f"pair {self.student!r} -> {self.teacher!r}"
        _check_loss(where, self.loss, self.temperature, self.params, self.weight)
        arity = LOSSES.get(self.loss).arity
        for side, value in (("student", self.student), ("teacher", self.teacher)):
            names = [value] if isinstance(value, str) else value
            if arity == 1 and not isinstance(value, str):
                raise ConfigError(f"{where}: loss {self.loss!r} compares one layer per side; {side} must be a single name")
            if arity > 1 and (isinstance(value, str) or len(value) != arity):
                raise ConfigError(f"{where}: loss {self.loss!r} compares {arity} layers per side; {side} must be a list of {arity} names")
            if any(not n for n in names):
                raise ConfigError(f"{where}: {side} layer name is empty")
            if arity > 1 and any(is_pattern(n) for n in names):
                raise ConfigError(f"{where}: patterns are only allowed for single-layer pairs")
        if isinstance(self.student, str) and is_pattern(self.student) != is_pattern(self.teacher):
            raise ConfigError(f"{where}: write both sides as patterns or both as names")

    kwargs = _loss_kwargs

    def label(self) -> str:
        """A short readable name of the pair (used as key in :meth:`Distiller.losses`)."""

        def show(v: str | list[str]) -> str:
            return v if isinstance(v, str) else "+".join(v)

        return f"{show(self.student)}->{show(self.teacher)}:{self.loss}"


@dataclass(frozen=True)
class DistillConfig(SlimConfig):
    """What a :class:`~slim_distill.Distiller` compares.

    Args:
        logits: the loss on the model outputs, or None for feature-only distillation.
        pairs: feature pairs (names or patterns), each with its own loss and weight.

    Example:
        >>> cfg = DistillConfig.from_dict({
        ...     "logits": {"loss": "kl", "temperature": 4.0, "weight": 1.0},
        ...     "pairs": [{"student": "features.6", "teacher": "layer2", "loss": "mse", "weight": 1.0}]})
        >>> DistillConfig.from_yaml(cfg.to_yaml()) == cfg
        True
    """

    logits: LogitsConfig | None = None
    pairs: list[PairConfig] = field(default_factory=list)

    @classmethod
    def _from_dict(cls, data: dict[str, Any], path: str) -> DistillConfig:
        # build `logits` here: slim_core's Optional conversion would replace its precise error with a generic one
        if isinstance(data, dict) and isinstance(data.get("logits"), dict):
            data = dict(data, logits=LogitsConfig._from_dict(data["logits"], f"{path}.logits"))
        return super()._from_dict(data, path)

    def validate(self) -> None:
        if self.logits is None and not self.pairs:
            raise ConfigError("DistillConfig has nothing to distill: give `logits`, `pairs`, or both")


@dataclass(frozen=True)
class DMLConfig(SlimConfig):
    """Deep mutual learning (Zhang et al., 2018) between two or more students.

    Args:
        loss: logit loss each student takes towards every peer (default ``"kl"``).
        temperature: softening temperature (``> 0``); None keeps the loss default.
        weight: factor of the mutual term in :meth:`MutualLearner.loss`.
        params: further keyword arguments of the loss.
    """

    loss: str = "kl"
    temperature: float | None = None
    weight: float = 1.0
    params: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        _check_loss("DMLConfig", self.loss, self.temperature, self.params, self.weight)
        check_range("DMLConfig.weight", self.weight, 0.0)

    kwargs = _loss_kwargs
