"""Errors raised by slim-distill; all derive from :class:`slim_core.SlimError`."""

from __future__ import annotations

from slim_core.errors import ConfigError, SlimError

__all__ = ["DistillError", "LayerNotFoundError", "ShapeMismatchError"]


class DistillError(SlimError):
    """A distillation setup cannot run (feature missing, loss asked before a forward, ...)."""


class LayerNotFoundError(DistillError, ConfigError):
    """A pair names a sublayer the model does not have; the message lists close names."""


class ShapeMismatchError(DistillError, ValueError):
    """Student and teacher tensors of a pair cannot be compared (and no adaptor can fix it)."""
