"""PruneConfig: what structured pruning removes and how channels are ranked."""

from __future__ import annotations

from dataclasses import dataclass, field

from slim_core import ConfigError, SlimConfig, check_range

__all__ = ["PruneConfig"]


@dataclass(frozen=True)
class PruneConfig(SlimConfig):
    """Target and criterion of :func:`slim_prune.prune_`.

    Exactly one kind of target is given:

    - ``ratio``: the fraction of channels removed from every prunable group;
    - ``ratios``: per-layer fractions ``{layer_name: ratio}`` (a layer names the group
      whose channels it produces or consumes); ``ratio`` may be combined as the default
      for the other groups;
    - ``flops_ratio`` / ``params_ratio``: the fraction of the model's FLOPs / parameters
      to remove, reached by ranking channels across all groups (``global_ranking``) or by
      one uniform ratio found by bisection (``global_ranking=False``).

    Args:
        ratio: fraction in [0, 1) of each group's channels to remove.
        ratios: per-layer fractions in [0, 1).
        flops_ratio: fraction in [0, 1) of FLOPs to remove (0.5 halves the FLOPs).
        params_ratio: fraction in [0, 1) of parameters to remove.
        criterion: name in :data:`slim_prune.CRITERIA` (``l1``, ``l2``, ``fpgm``, ``bn_scale``, ``taylor``).
        ignored_layers: layer names (``named_sublayers`` paths) whose channels are never pruned;
            a name also covers its sublayers.
        round_to: keep every pruned group's channel count a multiple of this.
        steps: prune in this many iterative steps (scores are recomputed after each).
        global_ranking: rank channels across groups for a FLOPs/params target.
        max_ratio: at most this fraction of any group is removed by a global target.

    Example:
        >>> PruneConfig(flops_ratio=0.5, criterion="fpgm").to_dict()["flops_ratio"]
        0.5
    """

    ratio: float | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    flops_ratio: float | None = None
    params_ratio: float | None = None
    criterion: str = "l1"
    ignored_layers: list[str] = field(default_factory=list)
    round_to: int = 1
    steps: int = 1
    global_ranking: bool = True
    max_ratio: float = 0.9

    def validate(self) -> None:
        from slim_prune.criteria import CRITERIA  # late: users register criteria after importing the config

        check_range("PruneConfig.ratio", self.ratio, 0.0, 1.0, hi_open=True)
        for name, value in self.ratios.items():
            check_range(f"PruneConfig.ratios[{name!r}]", value, 0.0, 1.0, hi_open=True)
        check_range("PruneConfig.flops_ratio", self.flops_ratio, 0.0, 1.0, hi_open=True)
        check_range("PruneConfig.params_ratio", self.params_ratio, 0.0, 1.0, hi_open=True)
        check_range("PruneConfig.round_to", self.round_to, 1)
        check_range("PruneConfig.steps", self.steps, 1)
        check_range("PruneConfig.max_ratio", self.max_ratio, 0.0, 1.0, lo_open=True, hi_open=True)
        CRITERIA.get(self.criterion)
        globals_ = [n for n in ("flops_ratio", "params_ratio") if getattr(self, n) is not None]
        if len(globals_) > 1:
            raise ConfigError("PruneConfig: give flops_ratio or params_ratio, not both")
        if globals_ and (self.ratio is not None or self.ratios):
            raise ConfigError(f"PruneConfig: {globals_[0]} is a global target; it cannot be combined with ratio/ratios")
        if not globals_ and self.ratio is None and not self.ratios:
            raise ConfigError("PruneConfig: no target; set ratio, ratios, flops_ratio or params_ratio")

    @property
    def target(self) -> tuple[str, float] | None:
        """``("flops", r)`` or ``("params", r)`` for a global target, else None."""
        if self.flops_ratio is not None:
            return ("flops", self.flops_ratio)
        if self.params_ratio is not None:
            return ("params", self.params_ratio)
        return None
