"""The compression recipe: stages, training settings and the target, with a YAML round trip.

A recipe is a list of stages whose settings are exactly the config dicts of the
package that runs them (``PruneConfig.to_dict()``, ``PTQConfig.to_dict()``, ...),
plus ``train`` settings for the fine-tuning stages and a ``target``::

    stages:
      - prune: {flops_ratio: 0.3, criterion: l1}
      - distill: {logits: {loss: kl, temperature: 4.0}}
      - ptq: {calibrator: kl}
    train: {epochs: 2, optimizer: adam, learning_rate: 0.001}
    target: {max_metric_drop: 0.005}

A stage entry may also carry its own ``train:`` mapping, overriding the
top-level one for that stage. Errors name the line and the key.

Example:
    >>> r = load_recipe("stages: [{ptq: {}}]\\ntarget: {max_metric_drop: 0.01}\\n")
    >>> [s.kind for s in r.stages], r.target.max_metric_drop
    (['ptq'], 0.01)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from slim_core import ConfigError, SlimConfig, check_range, load_yaml
from slim_core.registry import closest
from slim_distill.config import DistillConfig

__all__ = [
    "TrainConfig",
    "TargetConfig",
    "StageSpec",
    "Recipe",
    "load_recipe",
    "STAGE_KINDS",
]

#: Stage kinds a recipe may name, in the order the issue lists them.
STAGE_KINDS = ("prune", "sparsity", "distill", "qat", "ptq", "weight_only", "nas")
#: Most stages a recipe may hold: each stage is a full compression and fine-tuning step, so a longer
#: list is a mistake (or a hostile file), refused before any stage is checked.
MAX_STAGES = 64


@dataclass(frozen=True)
class TrainConfig(SlimConfig):
    """Fine-tuning settings shared by the training stages (distill, qat, sparsity).

    Args:
        epochs: passes over the training data (used when ``steps`` is 0).
        steps: optimizer steps; overrides ``epochs`` when > 0.
        optimizer: ``sgd``, ``momentum``, ``adam`` or ``adamw``.
        learning_rate: peak learning rate.
        lr_schedule: ``constant``, ``cosine`` (to 0 over the run) or ``step`` (x0.1 at 1/2 and 3/4 of the run).
        warmup_steps: linear warm-up steps before the schedule.
        weight_decay: L2 / decoupled weight decay.
        eval_interval: evaluate every N steps and stop early when the metric target is met (0: only at the end).
        label_loss_weight: weight of cross-entropy on the labels when the data carries them (0: distillation only).
        seed: random seed of the data order and of Paddle.
        distill: ``DistillConfig`` dict of the distillation loss from the original model used by
            the training stages other than ``distill`` (default: soft-label KL on the logits).
    """

    epochs: int = 1
    steps: int = 0
    optimizer: Literal["sgd", "momentum", "adam", "adamw"] = "adam"
    learning_rate: float = 1e-3
    lr_schedule: Literal["constant", "cosine", "step"] = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    eval_interval: int = 0
    label_loss_weight: float = 0.0
    seed: int = 0
    distill: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        check_range("TrainConfig.epochs", self.epochs, 0)
        check_range("TrainConfig.steps", self.steps, 0)
        check_range("TrainConfig.learning_rate", self.learning_rate, 0.0, lo_open=True)
        check_range("TrainConfig.warmup_steps", self.warmup_steps, 0)
        check_range("TrainConfig.weight_decay", self.weight_decay, 0.0)
        check_range("TrainConfig.eval_interval", self.eval_interval, 0)
        check_range("TrainConfig.label_loss_weight", self.label_loss_weight, 0.0)
        if self.epochs == 0 and self.steps == 0:
            raise ConfigError("TrainConfig: set epochs or steps above 0")
        if self.distill:
            try:
                DistillConfig.from_dict(self.distill)
            except ConfigError as exc:
                raise ConfigError(f"TrainConfig.distill: {exc}") from exc


@dataclass(frozen=True)
class TargetConfig(SlimConfig):
    """What counts as success. Unset fields do not constrain.

    Args:
        max_metric_drop: largest allowed drop of the metric below the original model's
            (in the metric's own units: 0.005 is half a point of accuracy in [0, 1]).
        min_metric: smallest acceptable metric value.
        min_speedup: smallest acceptable speedup of the measured latency (batch 1, first backend).
        max_size: largest acceptable size on disk, in bytes.
        higher_is_better: False for metrics such as loss or error rate.
    """

    max_metric_drop: float | None = None
    min_metric: float | None = None
    min_speedup: float | None = None
    max_size: int | None = None
    higher_is_better: bool = True

    def validate(self) -> None:
        check_range("TargetConfig.max_metric_drop", self.max_metric_drop, 0.0)
        check_range("TargetConfig.min_speedup", self.min_speedup, 0.0, lo_open=True)
        check_range("TargetConfig.max_size", self.max_size, 1)

    @property
    def is_set(self) -> bool:
        """Whether any part constrains the result (a recipe without a target has none)."""
        return any(v is not None for v in (self.max_metric_drop, self.min_metric, self.min_speedup, self.max_size))

    def describe(self) -> str:
        """One line such as ``metric drop <= 0.005, speedup >= 1.5x``."""
        parts = []
        if self.max_metric_drop is not None:
            parts.append(f"metric drop <= {self.max_metric_drop:g}")
        if self.min_metric is not None:
            parts.append(f"metric {'>=' if self.higher_is_better else '<='} {self.min_metric:g}")
        if self.min_speedup is not None:
            parts.append(f"speedup >= {self.min_speedup:g}x")
        if self.max_size is not None:
            parts.append(f"size <= {self.max_size:,} bytes")
        return ", ".join(parts) or "none (smallest latency at any metric)"


@dataclass(frozen=True)
class StageSpec(SlimConfig):
    """One stage of a recipe.

    Args:
        kind: one of :data:`STAGE_KINDS` (or a stage a user registered in ``slim_auto.STAGES``).
        settings: the stage package's config dict, validated by that config class when the stage runs.
        train: fine-tuning overrides for this stage (keys of :class:`TrainConfig`).
        name: label used in reports and checkpoints (default: ``kind``).
        search: settings to search, ``{key: [value, ...]}``: each combination is tried on a copy of
            the stage's input and the one with the best metric is kept (Optuna TPE when installed
            and ``max_trials`` is below the grid size, else the grid in order).
        max_trials: most combinations to try (0: the whole grid).
    """

    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    search: dict[str, list[Any]] = field(default_factory=dict)
    max_trials: int = 0

    def validate(self) -> None:
        for key, values in self.search.items():
            if not values:
                raise ConfigError(f"stage {self.label!r}: search.{key} is an empty list")
        check_range(f"stage {self.label!r}: max_trials", self.max_trials, 0)

    @property
    def label(self) -> str:
        return self.name or self.kind


@dataclass(frozen=True)
class Recipe(SlimConfig):
    """A full recipe: ordered stages, training settings and the target.

    Example:
        >>> Recipe.from_dict({"stages": [{"kind": "ptq"}]}).stages[0].kind
        'ptq'
    """

    stages: tuple[StageSpec, ...] = ()
    train: TrainConfig = field(default_factory=TrainConfig)
    target: TargetConfig = field(default_factory=TargetConfig)

    def validate(self) -> None:
        _check_stage_count(len(self.stages), "Recipe.stages")

    def train_for(self, stage: StageSpec) -> TrainConfig:
        """The training settings of ``stage``: the recipe's, with the stage's overrides."""
        if not stage.train:
            return self.train
        merged = {**self.train.to_dict(), **stage.train}
        return TrainConfig.from_dict(merged)

    def fingerprint(self) -> str:
        """Stable hash of the stages and training settings (what a checkpoint must match to resume)."""
        payload = json.dumps({"stages": [s.to_dict() for s in self.stages], "train": self.train.to_dict()}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_recipe_yaml(self) -> str:
        """The recipe in the user-facing YAML form (``- prune: {...}`` entries)."""
        stages = []
        for s in self.stages:
            entry: dict[str, Any] = {s.kind: dict(s.settings)}
            if s.search:
                entry["search"] = dict(s.search)
            if s.max_trials:
                entry["max_trials"] = s.max_trials
            if s.train:
                entry["train"] = dict(s.train)
            if s.name:
                entry["name"] = s.name
            stages.append(entry)
        data = {"stages": stages, "train": self.train.to_dict(), "target": self.target.to_dict()}
        return yaml.safe_dump(data, sort_keys=False)


# --------------------------------------------------------------------- parsing
_TOP_KEYS = ("stages", "train", "target")
_ENTRY_EXTRA = ("train", "name", "search", "max_trials")


def _line_map(text: str) -> dict[tuple[Any, ...], int]:
    """Map each key path (``("stages", 0, "prune", "ratio")``) to its 1-based line in ``text``."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = path + (k.value,)
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


class _Where:
    """Formats ``line N, key a.b.c`` for error messages."""

    def __init__(self, source: str, lines: dict[tuple[Any, ...], int]) -> None:
        self.source = source
        self.lines = lines

    def __call__(self, path: tuple[Any, ...]) -> str:
        line = None
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                line = self.lines[path[:cut]]
                break
        key = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[")
        at = f"line {line}, " if line is not None else ""
        return f"{self.source}: {at}key {key!r}" if key else f"{self.source}: {at}".rstrip(", ")


def _unknown(where: _Where, path: tuple[Any, ...], key: str, valid: list[str] | tuple[str, ...]) -> ConfigError:
    hint = closest(str(key), list(valid))
    did = f"; did you mean {hint!r}?" if hint else ""
    return ConfigError(f"{where(path + (key,))}: unknown key{did} (valid: {', '.join(valid)})")


def _parse_stage(entry: Any, i: int, where: _Where, known_kinds: list[str]) -> StageSpec:
    path: tuple[Any, ...] = ("stages", i)
    if isinstance(entry, str):
        entry = {entry: {}}
    if not isinstance(entry, dict) or not entry:
        raise ConfigError(f"{where(path)}: a stage is a mapping such as '- ptq: {{calibrator: kl}}', got {entry!r}")
    if "kind" in entry:  # the dataclass form written by Recipe.to_dict()
        kind = entry["kind"]
        extra = [k for k in entry if k not in StageSpec.field_names()]
        if extra:
            raise _unknown(where, path, extra[0], StageSpec.field_names())
        settings, train, name = entry.get("settings") or {}, entry.get("train") or {}, entry.get("name", "")
        kind_path = path + ("kind",)
    else:
        kinds = [k for k in entry if k not in _ENTRY_EXTRA]
        if len(kinds) != 1:
            others = [k for k in entry if k not in _ENTRY_EXTRA and k not in known_kinds]
            if others:
                raise _unknown(where, path, others[0], known_kinds)
            raise ConfigError(f"{where(path)}: a stage entry names exactly one stage kind, found {kinds or 'none'}")
        kind = kinds[0]
        settings, train, name = entry[kind] or {}, entry.get("train") or {}, entry.get("name", "")
        kind_path = path + (kind,)
    search, max_trials = entry.get("search") or {}, entry.get("max_trials", 0)
    if kind not in known_kinds:
        hint = closest(str(kind), known_kinds)
        did = f"; did you mean {hint!r}?" if hint else ""
        raise ConfigError(f"{where(kind_path)}: unknown stage kind {kind!r}{did} (stages: {', '.join(known_kinds)})")
    if not isinstance(settings, dict):
        raise ConfigError(f"{where(kind_path)}: the settings of stage {kind!r} must be a mapping, got {type(settings).__name__}")
    if not isinstance(train, dict):
        raise ConfigError(f"{where(path + ('train',))}: must be a mapping of training settings")
    for key in train:
        if key not in TrainConfig.field_names():
            raise _unknown(where, path + ("train",), key, TrainConfig.field_names())
    if not isinstance(search, dict) or not all(isinstance(v, list) for v in search.values()):
        raise ConfigError(f"{where(path + ('search',))}: must map setting names to lists of values")
    for key in search:
        if not isinstance(key, str):
            raise ConfigError(f"{where(path + ('search', key))}: setting names are strings")
    try:
        return StageSpec(
            kind=str(kind), settings=dict(settings), train=dict(train), name=str(name or ""), search=search, max_trials=max_trials
        )
    except ConfigError as exc:
        raise ConfigError(f"{where(path)}: {exc}") from exc


def _check_stage_count(n: int, where: str) -> None:
    if n > MAX_STAGES:
        raise ConfigError(f"{where}: {n:,} stages; a recipe holds at most {MAX_STAGES}")


def _check_section(data: Any, key: str, cls: type[SlimConfig], where: _Where) -> SlimConfig:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where((key,))}: must be a mapping, got {type(value).__name__}")
    for k in value:
        if k not in cls.field_names():
            raise _unknown(where, (key,), k, cls.field_names())
    try:
        return cls.from_dict(value)
    except ConfigError as exc:
        bad = next((k for k in value if f".{k}" in str(exc)), None)
        raise ConfigError(f"{where((key,) + ((bad,) if bad else ()))}: {exc}") from exc


def load_recipe(
    source: str | os.PathLike[str] | dict[str, Any] | Recipe, *, known_kinds: list[str] | None = None, allow_keys: tuple[str, ...] = ()
) -> Recipe:
    """Parse a recipe from a YAML file, YAML text, a dict or a :class:`Recipe`.

    Args:
        source: path to a ``.yaml``/``.yml`` file, YAML text, a dict, or a Recipe (returned as is).
        known_kinds: stage kinds accepted (default: :data:`STAGE_KINDS` plus registered stages).
        allow_keys: further top-level keys accepted and ignored (``slim compress`` reads
            ``model``, ``data``, ``out`` and ``max_time`` from the same file).

    Returns:
        The validated :class:`Recipe`. Stage settings are validated by the stage's own
        config class in :func:`slim_auto.stages.check_recipe`.

    Raises:
        ConfigError: malformed YAML (line and column), unknown keys (line, key and the
            closest valid key), wrong types, or an ACT recipe (use :func:`slim_auto.translate_act`).

    Example:
        >>> load_recipe({"stages": [{"ptq": {"calibrator": "kl"}}]}).stages[0].settings
        {'calibrator': 'kl'}
    """
    if isinstance(source, Recipe):
        return source
    known = list(known_kinds) if known_kinds is not None else list(STAGE_KINDS)
    if isinstance(source, dict):
        data, lines, name = source, {}, "recipe"
    else:
        is_path = isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml")))
        data = load_yaml(source)  # raises on syntax errors (line and column), a missing, non-UTF-8 or hostile file
        text = Path(source).read_text(encoding="utf-8") if is_path and Path(source).is_file() else None
        if text is None:
            text = str(source)
        lines, name = _line_map(text), (str(source) if is_path else "recipe")
    where = _Where(name, lines)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where(())}: a recipe is a mapping with keys {', '.join(_TOP_KEYS)}, got {type(data).__name__}")
    from slim_auto.act import ACT_KEYS

    act = [k for k in data if k in ACT_KEYS]
    if act:
        raise ConfigError(
            f"{where((act[0],))}: this is a PaddleSlim ACT recipe (key {act[0]!r}); translate it with "
            "slim_auto.translate_act(...) or pass it to AutoCompression / `slim compress`, which translate it"
        )
    for key in data:
        if key not in _TOP_KEYS and key not in allow_keys:
            raise _unknown(where, (), key, _TOP_KEYS + tuple(allow_keys))
    raw_stages = data.get("stages") or []
    if not isinstance(raw_stages, list):
        raise ConfigError(f"{where(('stages',))}: must be a list of stages, got {type(raw_stages).__name__}")
    _check_stage_count(len(raw_stages), where(("stages",)))
    stages = tuple(_parse_stage(e, i, where, known) for i, e in enumerate(raw_stages))
    train = _check_section(data, "train", TrainConfig, where)
    target = _check_section(data, "target", TargetConfig, where)
    for i, s in enumerate(stages):
        if s.train:
            try:
                TrainConfig.from_dict({**train.to_dict(), **s.train})
            except ConfigError as exc:
                raise ConfigError(f"{where(('stages', i, 'train'))}: {exc}") from exc
    recipe = Recipe(stages=stages, train=train, target=target)  # type: ignore[arg-type]
    object.__setattr__(recipe, "_lines", lines)
    object.__setattr__(recipe, "_source", name)
    return recipe


def stage_where(recipe: Recipe, index: int) -> str:
    """``file: line N`` of stage ``index`` when the recipe came from YAML text, else ``stage N``."""
    lines = getattr(recipe, "_lines", {}) or {}
    src = getattr(recipe, "_source", "recipe")
    line = lines.get(("stages", index))
    kind = recipe.stages[index].kind
    return f"{src}: line {line}, stage {index} ({kind})" if line else f"{src}: stage {index} ({kind})"


__all__.append("stage_where")
