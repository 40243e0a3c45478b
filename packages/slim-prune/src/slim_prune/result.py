"""PruneResult: what structured pruning changed, measured."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["PruneResult"]


@dataclass
class PruneResult:
    """Measured outcome of :func:`slim_prune.prune_`.

    Attributes:
        flops_before / flops_after: model FLOPs for the example inputs (slim_analysis definition).
        params_before / params_after: parameter element counts.
        channels: ``{layer: (before, after)}`` output channels of every pruned layer.
        removed: ``{group name: removed channel indices}`` (indices of the group before pruning;
            with ``steps > 1`` the names carry the step as ``name@step``).
        spec: per-layer parameter shapes after pruning (what :func:`save_pruned` records).
    """

    flops_before: float
    flops_after: float
    params_before: int
    params_after: int
    channels: dict[str, tuple[int, int]] = field(default_factory=dict)
    removed: dict[str, list[int]] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def flops_ratio(self) -> float:
        """Fraction of FLOPs removed."""
        return 1.0 - self.flops_after / self.flops_before if self.flops_before else 0.0

    @property
    def params_ratio(self) -> float:
        """Fraction of parameters removed."""
        return 1.0 - self.params_after / self.params_before if self.params_before else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "flops_ratio": self.flops_ratio,
            "params_ratio": self.params_ratio,
            "channels": {k: list(v) for k, v in self.channels.items()},
            "removed": self.removed,
        }

    def summary(self) -> str:
        """A short human-readable table."""
        lines = [
            "| | before | after | removed |",
            "|---|---|---|---|",
            f"| FLOPs | {self.flops_before:,.0f} | {self.flops_after:,.0f} | {self.flops_ratio:.1%} |",
            f"| params | {self.params_before:,} | {self.params_after:,} | {self.params_ratio:.1%} |",
            f"| pruned layers | {len(self.channels)} | | |",
        ]
        return "\n".join(lines)
