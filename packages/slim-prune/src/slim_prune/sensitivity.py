"""Sensitivity analysis: prune each channel group alone and record the metric loss.

The result is saved as JSON after every trial, so a long run that stops can be
resumed from the partial file. :meth:`Sensitivity.ratios_for` then picks per-layer
ratios that reach a FLOPs target while keeping the worst loss as small as possible.

Example:
    >>> sens = sensitivity(model, eval_fn, x, ratios=(0.2, 0.4, 0.6), path="sens.json")   # doctest: +SKIP
    >>> cfg = PruneConfig(ratios=sens.ratios_for(flops_ratio=0.4))                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slim_core import ConfigError, DataError, atomic_write, progress
from slim_prune._util import as_inputs, check_layer_names, eval_mode
from slim_prune.cost import CostModel, build_cost_models, layer_flops
from slim_prune.criteria import CRITERIA, score
from slim_prune.planner import keep_count, local_plan
from slim_prune.prune import PrunePlan, _channel_slices, _restore, _snapshot, _trace, apply_plan, group_name, prunable_groups

__all__ = ["Sensitivity", "sensitivity"]

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class Sensitivity:
    """Metric loss per group and ratio.

    Attributes:
        baseline: metric of the unpruned model.
        ratios: the ratios tried.
        losses: ``{group name: {ratio: relative loss}}`` where loss is
            ``(baseline - metric) / |baseline|`` (negated when lower metrics are better).
        sizes: ``{group name: channels}``.
        cost: the FLOPs cost model (lets :meth:`ratios_for` work from the file alone).
        gids: ``{group name: group id in the cost model}``.
        criterion: the criterion used to choose the channels.
    """

    baseline: float
    ratios: list[float]
    losses: dict[str, dict[float, float]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    gids: dict[str, int] = field(default_factory=dict)
    criterion: str = "l1"
    higher_is_better: bool = True

    # -- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "ratios": self.ratios,
            "criterion": self.criterion,
            "higher_is_better": self.higher_is_better,
            "sizes": self.sizes,
            "gids": self.gids,
            "losses": {g: {str(r): v for r, v in d.items()} for g, d in self.losses.items()},
            "cost": self.cost,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON file atomically."""
        with atomic_write(path) as fh:
            json.dump(self.to_dict(), fh, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Sensitivity:
        """Read a file written by :meth:`save` (complete or partial).

        Raises:
            DataError: the file is not a sensitivity JSON.
        """
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(
                baseline=float(d["baseline"]),
                ratios=[float(r) for r in d["ratios"]],
                losses={g: {float(r): float(v) for r, v in m.items()} for g, m in d["losses"].items()},
                sizes={g: int(s) for g, s in d["sizes"].items()},
                cost=d.get("cost", {}),
                gids={g: int(i) for g, i in d.get("gids", {}).items()},
                criterion=d.get("criterion", "l1"),
                higher_is_better=bool(d.get("higher_is_better", True)),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path} is not a slim-prune sensitivity file: {exc}") from exc

    # -- use -------------------------------------------------------------------------------
    def complete(self) -> bool:
        return all(len(self.losses.get(g, {})) == len(self.ratios) for g in self.sizes)

    def max_ratio_under(self, group: str, max_loss: float) -> float:
        """Largest ratio whose (interpolated) loss, and every smaller ratio's, stays <= ``max_loss``."""
        pts = sorted(self.losses.get(group, {}).items())
        if not pts:
            return 0.0
        xs = [0.0] + [r for r, _ in pts]
        ys = [0.0] + [v for _, v in pts]
        best = 0.0
        for r in np.linspace(0.0, xs[-1], int(round(xs[-1] * 100)) + 1):
            if float(np.interp(r, xs, ys)) > max_loss:
                break
            best = float(r)
        return best

    def ratios_for(self, flops_ratio: float | None = None, *, max_loss: float | None = None, round_to: int = 1) -> dict[str, float]:
        """Per-layer ratios for :class:`PruneConfig` ``ratios``.

        Args:
            flops_ratio: fraction of FLOPs to remove; the smallest loss threshold that reaches
                it is found by bisection.
            max_loss: instead, prune each group as far as its loss stays below this.

        Returns:
            ``{layer name: ratio}`` for groups with a ratio above zero.

        Raises:
            ConfigError: neither or both targets, or an unreachable FLOPs target.
        """
        if (flops_ratio is None) == (max_loss is None):
            raise ConfigError("ratios_for: give exactly one of flops_ratio or max_loss")
        if max_loss is not None:
            out = {g: self.max_ratio_under(g, max_loss) for g in self.sizes}
            return {g: r for g, r in out.items() if r > 0}
        assert flops_ratio is not None
        if not 0.0 <= flops_ratio < 1.0:
            raise ConfigError(f"flops_ratio={flops_ratio!r} is outside [0, 1)")
        if not self.cost:
            raise ConfigError("this sensitivity file has no cost model; recompute it with slim_prune.sensitivity")
        model = CostModel.from_dict(self.cost)
        total = model.value({})

        def remaining(t: float) -> tuple[float, dict[str, float]]:
            rs = {g: self.max_ratio_under(g, t) for g in self.sizes}
            kept = {self.gids[g]: keep_count(self.sizes[g], r, round_to) for g, r in rs.items() if g in self.gids}
            return model.value(kept), rs

        lo_losses = [v for d in self.losses.values() for v in d.values()]
        lo, hi = min([0.0, *lo_losses]) - 1e-9, max([0.0, *lo_losses]) + 1e-9
        if remaining(hi)[0] > total * (1 - flops_ratio) * 1.001:
            reached = 1 - remaining(hi)[0] / total
            raise ConfigError(
                f"flops_ratio={flops_ratio} is not reachable from the tried ratios (at most {reached:.1%}); add larger ratios"
            )
        for _ in range(50):
            mid = (lo + hi) / 2
            if remaining(mid)[0] > total * (1 - flops_ratio):
                lo = mid
            else:
                hi = mid
        return {g: r for g, r in remaining(hi)[1].items() if r > 0}

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Draw loss-vs-ratio curves into an image file (needs ``slim-prune[plot]``: matplotlib)."""
        from slim_core.extras import require

        matplotlib = require("matplotlib", package="slim-prune", extra="plot", what="Sensitivity.plot")
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for g, d in sorted(self.losses.items()):
            pts = sorted(d.items())
            ax.plot([0.0] + [r for r, _ in pts], [0.0] + [v for _, v in pts], marker=".", label=g)
        ax.set_xlabel("pruned ratio")
        ax.set_ylabel("relative metric loss")
        if len(self.losses) <= 20:
            ax.legend(fontsize=6)
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
        plt.close(fig)
        return out


def sensitivity(
    model: Any,
    eval_fn: Callable[[Any], float],
    example_inputs: Any,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    *,
    criterion: str = "l1",
    path: str | os.PathLike[str] | None = None,
    ignored_layers: Sequence[str] = (),
    higher_is_better: bool = True,
) -> Sensitivity:
    """Prune every prunable channel group alone at each ratio and record the metric loss.

    The model is restored after every trial (it is unchanged when this returns).

    Args:
        model: the Layer.
        eval_fn: ``eval_fn(model) -> float`` metric (accuracy: higher is better).
        example_inputs: tensor(s) for tracing and FLOPs.
        ratios: ratios in (0, 1) to try.
        criterion: which channels go (a name in ``CRITERIA``; gradient criteria are not supported here).
        path: JSON file written after each trial; an existing (partial) file is resumed.
        ignored_layers: layers whose groups are skipped.
        higher_is_better: False for metrics like loss or error.

    Returns:
        :class:`Sensitivity`.

    Raises:
        ConfigError: bad ratios, unknown criterion or layer, a file from a different model.
    """
    CRITERIA.get(criterion)
    ratios = sorted(float(r) for r in ratios)
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise ConfigError(f"sensitivity ratios must be in (0, 1), got {ratios}")
    check_layer_names(model, list(ignored_layers), "ignored_layers")
    inputs = as_inputs(example_inputs)
    graph = _trace(model, inputs)
    groups = prunable_groups(list(graph.channel_groups()), list(ignored_layers))
    if not groups:
        raise ConfigError("no prunable channel group in this model")
    names = {}
    for g in groups:
        base = group_name(g)
        names[g.id] = base if base not in names.values() else f"{base}#{g.id}"
    flops_model, _ = build_cost_models(model, groups, layer_flops(graph))
    sens: Sensitivity
    if path is not None and Path(path).is_file():
        sens = Sensitivity.load(path)
        expected = {names[g.id]: g.size for g in groups}
        if sens.sizes != expected or sens.criterion != criterion:
            raise ConfigError(f"{path} was computed for a different model or criterion; delete it or choose another path")
        for r in ratios:
            if r not in sens.ratios:
                sens.ratios.append(r)
        sens.ratios.sort()
    else:
        with eval_mode(model):
            baseline = float(eval_fn(model))
        sens = Sensitivity(
            baseline,
            list(ratios),
            sizes={names[g.id]: g.size for g in groups},
            cost=flops_model.to_dict(),
            gids={names[g.id]: g.id for g in groups},
            criterion=criterion,
            higher_is_better=higher_is_better,
        )
    by_id = {g.id: g for g in groups}
    todo = [(g, r) for g in groups for r in ratios if r not in sens.losses.get(names[g.id], {})]
    for g, r in progress(todo, desc="sensitivity"):
        scores = {g.id: score(criterion, _channel_slices(model, g, None))}
        removed = local_plan(scores, {g.id: r}, 1)
        if not removed.get(g.id):
            sens.losses.setdefault(names[g.id], {})[r] = 0.0
            continue
        plan = PrunePlan(by_id, removed, {g.id: names[g.id]})
        touched = {m.layer for m in g.members}
        snap = _snapshot(model, touched)
        try:
            apply_plan(model, plan)
            with eval_mode(model):
                metric = float(eval_fn(model))
        finally:
            _restore(model, snap)
        diff = sens.baseline - metric if higher_is_better else metric - sens.baseline
        loss = diff / abs(sens.baseline) if sens.baseline else diff
        sens.losses.setdefault(names[g.id], {})[r] = float(loss)
        if path is not None:
            sens.save(path)
    if path is not None:
        sens.save(path)
    return sens
