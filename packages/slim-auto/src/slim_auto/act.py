"""Translate PaddleSlim ACT (auto-compression) recipes into slim recipes.

PaddleSlim's ``paddleslim.auto_compression`` reads YAML with top-level keys
``Global``, ``QuantAware``, ``QuantPost``, ``Distillation``, ``ChannelPrune``,
``UnstructurePrune``, ``ASPPrune``, ``TransformerPrune``,
``HyperParameterOptimization`` and ``TrainConfig``. :func:`translate_act` turns
such a file into a :class:`~slim_auto.recipe.Recipe` and lists, key by key, what
was mapped and what has no equivalent (static-graph variable names, fleet and
AMP switches, ...), so nothing is dropped silently.

Example:
    >>> t = translate_act({"QuantPost": {"algo": "KL", "batch_nums": 10}})
    >>> [s.kind for s in t.recipe.stages], t.recipe.stages[0].settings["calibrator"]
    (['ptq'], 'kl')
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slim_auto.recipe import Recipe, StageSpec, TargetConfig, TrainConfig
from slim_core import ConfigError, load_yaml
from slim_core.config import check_value, short_repr
from slim_core.registry import closest

__all__ = ["ACT_KEYS", "ActTranslation", "translate_act", "is_act_recipe"]

ACT_KEYS = (
    "Global",
    "QuantAware",
    "QuantPost",
    "Distillation",
    "ChannelPrune",
    "UnstructurePrune",
    "ASPPrune",
    "TransformerPrune",
    "HyperParameterOptimization",
    "TrainConfig",
)

_PTQ_ALGO = {"kl": "kl", "hist": "percentile", "avg": "avg", "mse": "mse", "abs_max": "abs_max", "emd": "mse"}
_CRITERION = {"l1_norm": "l1", "l2_norm": "l2", "geometry_median": "fpgm", "bn_scale": "bn_scale", "fpgm": "fpgm"}
_DISTILL_LOSS = {"l2": "mse", "soft_label": "kl", "fsp": "fsp", "l1": "l1", "dkd": "dkd"}
_OPTIMIZERS = {"sgd": "sgd", "momentum": "momentum", "adam": "adam", "adamw": "adamw"}


@dataclass
class ActTranslation:
    """Result of :func:`translate_act`.

    Attributes:
        recipe: the slim recipe.
        mapped: ``"Section.key -> stage.key = value"`` lines for every key carried over.
        unsupported: ``"Section.key: reason"`` lines for keys with no equivalent.
    """

    recipe: Recipe
    mapped: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        lines = ["## PaddleSlim ACT recipe translation", "", "Mapped:", ""]
        lines += [f"- `{m}`" for m in self.mapped] or ["- (nothing)"]
        lines += ["", "Not supported (ignored):", ""]
        lines += [f"- `{u}`" for u in self.unsupported] or ["- (nothing)"]
        return "\n".join(lines) + "\n"


def is_act_recipe(data: Any) -> bool:
    """Whether a parsed YAML mapping is a PaddleSlim ACT recipe."""
    return isinstance(data, dict) and any(k in ACT_KEYS for k in data)


class _Invalid(ValueError):
    """A value of the wrong type for its ACT key (``use_pact: maybe``): a ConfigError naming the key."""


class _Builder:
    def __init__(self) -> None:
        self.mapped: list[str] = []
        self.unsupported: list[str] = []

    def section(
        self,
        name: str,
        data: Any,
        table: dict[str, tuple[str, Callable[[Any], Any]] | str],
        dest: dict[str, Any],
        stage: str,
        *,
        empty: str = "",
    ) -> None:
        """Map the keys of one ACT section: ``table[key]`` is a target key (with a converter) or an unsupported reason.

        ``data`` is None when the section is absent. A section present but empty is listed
        with ``empty`` (what it means), or as unsupported when ``empty`` is not given.

        Raises:
            ConfigError: the section is not a mapping, or a value has the wrong type (naming the key).
        """
        if data is None:
            return
        if not isinstance(data, dict):
            raise ConfigError(f"ACT recipe: section {name!r} must be a mapping, got {type(data).__name__}")
        if not data:
            if empty:
                self.mapped.append(f"{name} (empty section) -> {empty}")
            else:
                self.unsupported.append(f"{name}: empty section, nothing to translate")
            return
        for key, value in data.items():
            rule = table.get(key)
            if rule is None:
                hint = closest(str(key), [str(k) for k in table])
                self.unsupported.append(f"{name}.{key}: unknown ACT key" + (f" (did you mean {hint!r}?)" if hint else ""))
            elif isinstance(rule, str):
                self.unsupported.append(f"{name}.{key}: {rule}")
            else:
                target, conv = rule
                try:
                    converted = conv(value)
                except _Invalid as exc:
                    raise ConfigError(f"ACT recipe: {name}.{key}={short_repr(value)}: {exc}") from exc
                except (KeyError, ValueError, TypeError) as exc:
                    self.unsupported.append(f"{name}.{key}={short_repr(value)}: no equivalent ({exc})")
                    continue
                if converted is _SKIP:
                    self.unsupported.append(f"{name}.{key}={value!r}: no equivalent value")
                    continue
                dest[target] = converted
                self.mapped.append(f"{name}.{key} -> {stage}.{target} = {converted!r}")


_SKIP = object()


def _typed(tp: type) -> Callable[[Any], Any]:
    """A converter checking the value as a config field of type ``tp`` is checked (finite floats, 64-bit ints, real bools)."""

    def conv(v: Any) -> Any:
        try:
            return check_value(v, tp, "value")
        except ConfigError as exc:
            raise _Invalid(str(exc).removeprefix("value: ")) from exc

    return conv


_int, _float, _bool, _str = _typed(int), _typed(float), _typed(bool), _typed(str)


def _list_of(conv: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
    def convert(v: Any) -> list[Any]:
        if not isinstance(v, list):
            raise _Invalid(f"expected a list, got {type(v).__name__}")
        return [conv(x) for x in v]

    return convert


def _lower_map(table: dict[str, Any]) -> Callable[[Any], Any]:
    """Map a string case-insensitively; a value with no equivalent is listed as unsupported, never guessed."""

    def conv(v: Any) -> Any:
        return table.get(_str(v).lower(), _SKIP)

    return conv


def _strict_map(table: dict[str, Any]) -> Callable[[Any], Any]:
    """Like :func:`_lower_map` for lists: an unknown item makes the whole key unsupported (KeyError)."""

    def conv(v: Any) -> Any:
        key = _str(v).lower()
        if key not in table:
            raise KeyError(f"{v!r} is not one of {', '.join(table)}")
        return table[key]

    return conv


def _same(v: Any) -> Any:
    return v


# ACT's weight_quantize_type values: per-channel or per-tensor abs-max weights (the other two are activation types)
_WEIGHT_GRANULARITY = {"channel_wise_abs_max": "per_channel", "abs_max": "per_tensor"}


def _qat_weight_quanter(v: Any) -> Any:
    """slim's QAT ``abs_max`` weight quanter is per-channel: the equivalent of ``channel_wise_abs_max`` only."""
    return "abs_max" if _str(v).lower() == "channel_wise_abs_max" else _SKIP


def _percent(v: Any) -> float:
    """ACT's hist_percent is a fraction (0.9999); slim's percentile is in percent (99.99)."""
    v = _float(v)
    return v * 100.0 if v <= 1.0 else v


_STATIC_NAMES = "names static-graph variables; slim addresses layers by their named_sublayers() path (set it in the stage settings)"

_QUANT_COMMON: dict[str, tuple[str, Callable[[Any], Any]] | str] = {
    "weight_bits": ("weight_bits", _int),
    "activation_bits": ("activation_bits", _int),
    "activation_quantize_type": "activation observers are chosen by the calibrator (PTQ) or quanter (QAT)",
    "quantize_op_types": "slim decides which ops to quantize on the model graph (conv, linear, matmul and the ops between them)",
    "not_quant_pattern": _STATIC_NAMES,
    "onnx_format": "the export format is chosen at export (slim_deploy); Paddle Inference INT8 and ONNX QDQ are both written",
    "is_full_quantize": "slim decides which ops to quantize on the model graph",
    "dtype": "int8 only in ACT; use weight_bits/activation_bits",
}

_QUANT_POST = {
    **_QUANT_COMMON,
    "weight_quantize_type": ("weight_granularity", _lower_map(_WEIGHT_GRANULARITY)),
    "algo": ("calibrator", _lower_map(_PTQ_ALGO)),
    "hist_percent": ("percentile", _percent),
    "bias_correct": ("bias_correction", _bool),
    "batch_nums": ("calib_batches", _int),
    "batch_size": "the batch size is that of the calibration data you pass",
    "round_type": ("reconstruction", _lower_map({"adaround": {"method": "adaround"}, "round": None})),
    "lr": "set reconstruction.lr in the ptq settings",
    "is_use_cache_file": "calibration statistics are kept in memory",
    "recon_level": ("reconstruction", _lower_map({"layer-wise": {"method": "adaround"}, "region-wise": {"method": "brecq"}})),
    "simulate_activation_quant": "QDrop-style dropping is a PTQConfig reconstruction option",
    "skip_tensor_list": _STATIC_NAMES,
}

_QUANT_AWARE = {
    **_QUANT_COMMON,
    "weight_quantize_type": ("weight_quanter", _qat_weight_quanter),
    "use_pact": ("activation_quanter", lambda v: "pact" if _bool(v) else "moving_average_abs_max"),
    "moving_rate": ("ema_decay", _float),
    "for_tensorrt": "TensorRT deployment is out of scope on CPU",
    "window_size": "not used by slim quanters",
}

_CHANNEL_PRUNE = {
    "pruned_ratio": ("ratio", _float),
    "criterion": ("criterion", _lower_map(_CRITERION)),
    "prune_params_name": _STATIC_NAMES,
}

_TRANSFORMER_PRUNE = {"pruned_ratio": ("ratio", _float)}

_UNSTRUCTURE_PRUNE = {
    "prune_strategy": "slim-auto applies the sparsity at once and keeps the masks through the fine-tuning (no GMP schedule)",
    "prune_mode": "implied by which of ratio / threshold is set",
    "ratio": ("ratio", _float),
    "threshold": ("threshold", _float),
    "gmp_config": "slim-auto applies the sparsity at once (no GMP schedule)",
    "prune_params_type": "set layer_types / ignored_layers in the sparsity settings",
    "local_sparsity": ("scope", lambda v: "layer" if _bool(v) else "global"),
}

_ASP_PRUNE = {"prune_params_name": _STATIC_NAMES}

_DISTILLATION = {
    "loss": ("loss", _lower_map(_DISTILL_LOSS)),
    "alpha": ("weight", _float),
    "node": _STATIC_NAMES,
    "teacher_model_dir": "the teacher is the original model you pass",
    "teacher_model_filename": "the teacher is the original model you pass",
    "teacher_params_filename": "the teacher is the original model you pass",
}

_GLOBAL = {
    "model_dir": "pass the model to AutoCompression or `slim compress --model`",
    "model_filename": "pass the model to AutoCompression or `slim compress --model`",
    "params_filename": "pass the model to AutoCompression or `slim compress --model`",
    "input_list": "input names come from the model",
    "Evaluation": "pass eval_fn (or --data) instead",
    "batch_size": "the batch size is that of the data you pass",
    "reader_config": "pass train_data (or --data) instead",
    "deploy_backend": "latency is measured on Paddle Inference (and ONNX Runtime / OpenVINO when installed and allowed)",
    "input_shapes": "pass example_inputs or input_spec",
}

_HPO = {
    "ptq_algo": ("calibrator", _list_of(_strict_map(_PTQ_ALGO))),
    "bias_correct": ("bias_correction", _list_of(_bool)),
    "hist_percent": ("percentile", _list_of(_percent)),
    "batch_num": ("calib_batches", _list_of(_int)),
    "max_quant_count": ("__max_trials__", _int),
    "weight_quantize_type": ("weight_granularity", _list_of(_strict_map(_WEIGHT_GRANULARITY))),
    "weight_bits": ("weight_bits", _list_of(_int)),
    "activation_bits": ("activation_bits", _list_of(_int)),
    "round_type": "reconstruction is a PTQConfig setting",
}


def _learning_rate(v: Any) -> Any:
    if isinstance(v, dict):
        if "learning_rate" not in v:
            raise _Invalid("a schedule mapping needs its base learning_rate")
        return _float(v["learning_rate"])
    return _float(v)


def _train(b: _Builder, data: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    train: dict[str, Any] = {}
    target: dict[str, Any] = {}
    if data is None:
        return train, target
    if not isinstance(data, dict):
        raise ConfigError(f"ACT recipe: section 'TrainConfig' must be a mapping, got {type(data).__name__}")
    table: dict[str, tuple[str, Callable[[Any], Any]] | str] = {
        "epochs": ("epochs", _int),
        "train_iter": ("steps", _int),
        "learning_rate": ("learning_rate", _learning_rate),
        "eval_iter": ("eval_interval", _int),
        "logging_iter": "progress bars show the loss",
        "origin_metric": "the original metric is measured by eval_fn",
        "use_fleet": "start the run with `python -m paddle.distributed.launch` instead",
        "amp_config": "mixed precision is not used on CPU",
        "recover_model": "runs resume from the output directory's checkpoints",
        "sparse_model": "use a sparsity stage",
        "optim_args": "set weight_decay in train",
    }
    rest = {k: v for k, v in data.items() if k not in ("optimizer_builder", "target_metric")}
    if rest or not data:
        b.section("TrainConfig", rest, table, train, "train", empty="train defaults")
    lr = data.get("learning_rate")
    if isinstance(lr, dict) and "type" in lr:
        sched = {"cosineannealingdecay": "cosine", "piecewisedecay": "step", "multistepdecay": "step"}.get(str(lr["type"]).lower())
        if sched:
            train["lr_schedule"] = sched
            b.mapped.append(f"TrainConfig.learning_rate.type -> train.lr_schedule = {sched!r}")
        else:
            b.unsupported.append(f"TrainConfig.learning_rate.type={lr['type']!r}: schedules are constant, cosine, step")
    ob = data.get("optimizer_builder")
    if isinstance(ob, dict):
        opt = ob.get("optimizer", {})
        name = str(opt.get("type", "")).lower() if isinstance(opt, dict) else ""
        if name in _OPTIMIZERS:
            train["optimizer"] = _OPTIMIZERS[name]
            b.mapped.append(f"TrainConfig.optimizer_builder.optimizer.type -> train.optimizer = {name!r}")
        elif name:
            b.unsupported.append(f"TrainConfig.optimizer_builder.optimizer.type={name!r}: optimizers are {', '.join(_OPTIMIZERS)}")
        if "weight_decay" in ob:
            train["weight_decay"] = _checked("TrainConfig.optimizer_builder.weight_decay", ob["weight_decay"], _float)
            b.mapped.append(f"TrainConfig.optimizer_builder.weight_decay -> train.weight_decay = {train['weight_decay']!r}")
        for k in ob:
            if k not in ("optimizer", "weight_decay"):
                b.unsupported.append(f"TrainConfig.optimizer_builder.{k}: not used")
    elif ob is not None:
        raise ConfigError(f"ACT recipe: TrainConfig.optimizer_builder must be a mapping, got {type(ob).__name__}")
    if "target_metric" in data:
        target["min_metric"] = _checked("TrainConfig.target_metric", data["target_metric"], _float)
        b.mapped.append(f"TrainConfig.target_metric -> target.min_metric = {target['min_metric']!r}")
    return train, target


def _checked(key: str, value: Any, conv: Callable[[Any], Any]) -> Any:
    try:
        return conv(value)
    except _Invalid as exc:
        raise ConfigError(f"ACT recipe: {key}={short_repr(value)}: {exc}") from exc


def _fit_to_config(b: _Builder, kind: str, settings: dict[str, Any], valid: list[str] | None) -> dict[str, Any]:
    """Drop keys the installed stage config does not have, recording them as unsupported."""
    if valid is None:
        return settings
    kept = {}
    for k, v in settings.items():
        if k in valid:
            kept[k] = v
        else:
            b.mapped = [m for m in b.mapped if f"-> {kind}.{k} =" not in m]
            b.unsupported.append(f"{kind}.{k}={v!r}: the installed {kind} config has no such setting")
    return kept


_DEFAULT_DISTILL = "distill.logits = {} (soft-label KL on the logits, the default loss)"


def _present(data: dict[str, Any], key: str) -> Any:
    """The section's mapping; ``{}`` for a key present with no value (``Distillation:``), None when absent."""
    if key not in data:
        return None
    return {} if data[key] is None else data[key]


def translate_act(
    source: str | os.PathLike[str] | dict[str, Any], *, config_fields: Callable[[str], list[str] | None] | None = None
) -> ActTranslation:
    """Translate a PaddleSlim ACT recipe (file, YAML text or dict) into a slim :class:`Recipe`.

    Stage order follows ACT: structured pruning, then sparsity, then distillation
    fine-tuning (or QAT, which fine-tunes with the distillation loss), then PTQ.

    Args:
        source: the ACT YAML file, its text, or the parsed dict.
        config_fields: ``kind -> field names`` of the installed stage configs; keys the
            installed config lacks are listed as unsupported (default: :func:`slim_auto.stages.config_fields`).

    Returns:
        :class:`ActTranslation` with the recipe and the mapped / unsupported keys.

    Raises:
        ConfigError: malformed YAML, or a mapping without any ACT key.

    Example:
        >>> t = translate_act({"ChannelPrune": {"pruned_ratio": 0.3, "criterion": "l1_norm"}, "Distillation": {"alpha": 1.0}})
        >>> [s.kind for s in t.recipe.stages]
        ['prune', 'distill']
    """
    if config_fields is None:
        from slim_auto.stages import config_fields as _fields

        config_fields = _fields
    data = source if isinstance(source, dict) else load_yaml(source)
    if not is_act_recipe(data):
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"not a PaddleSlim ACT recipe: no key among {', '.join(ACT_KEYS)} (found {keys})")
    b = _Builder()
    for key in data:
        if key not in ACT_KEYS:
            hint = closest(str(key), list(ACT_KEYS))
            b.unsupported.append(f"{key}: unknown ACT section" + (f" (did you mean {hint!r}?)" if hint else ""))
    b.section("Global", _present(data, "Global"), _GLOBAL, {}, "-")
    stages: list[StageSpec] = []

    def add(kind: str, settings: dict[str, Any], **extra: Any) -> None:
        fields = config_fields(kind)
        if kind == "sparsity" and ("n" in settings or "m" in settings):
            fields = None  # N:M settings go to NMConfig, checked when the stage runs
        stages.append(StageSpec(kind=kind, settings=_fit_to_config(b, kind, settings, fields), **extra))

    for section, table in (("ChannelPrune", _CHANNEL_PRUNE), ("TransformerPrune", _TRANSFORMER_PRUNE)):
        if section in data:
            settings: dict[str, Any] = {}
            b.section(section, _present(data, section), table, settings, "prune", empty="prune with its default settings")
            add("prune", settings, name=section)
    if "UnstructurePrune" in data:
        settings = {}
        b.section(
            "UnstructurePrune", _present(data, "UnstructurePrune"), _UNSTRUCTURE_PRUNE, settings, "sparsity", empty="sparsity defaults"
        )
        add("sparsity", settings)
    if "ASPPrune" in data:
        settings = {"n": 2, "m": 4}
        b.mapped.append("ASPPrune -> sparsity.n = 2, sparsity.m = 4 (2:4 semi-structured)")
        b.section("ASPPrune", data["ASPPrune"], _ASP_PRUNE, settings, "sparsity")
        add("sparsity", settings, name="asp")
    distill: dict[str, Any] = {}
    if "Distillation" in data:
        logits: dict[str, Any] = {}
        b.section("Distillation", _present(data, "Distillation"), _DISTILLATION, logits, "distill.logits", empty=_DEFAULT_DISTILL)
        distill = {"logits": logits}  # an empty section means distillation with the default loss
    train, target = _train(b, _present(data, "TrainConfig"))
    if distill and "QuantAware" not in data:
        stages.append(StageSpec(kind="distill", settings=distill))
    elif distill:
        train["distill"] = distill
        b.mapped.append("Distillation -> train.distill (the distillation loss of the QAT fine-tuning)")
    if "QuantAware" in data:
        settings = {}
        b.section("QuantAware", _present(data, "QuantAware"), _QUANT_AWARE, settings, "qat", empty="qat with its default settings")
        add("qat", settings)
    if "QuantPost" in data or "HyperParameterOptimization" in data:
        settings = {}
        b.section("QuantPost", _present(data, "QuantPost"), _QUANT_POST, settings, "ptq", empty="ptq with its default settings")
        search: dict[str, Any] = {}
        b.section("HyperParameterOptimization", _present(data, "HyperParameterOptimization"), _HPO, search, "ptq.search")
        max_trials = int(search.pop("__max_trials__", 0))
        valid = config_fields("ptq")
        if valid is not None:
            for k in [k for k in search if k not in valid]:
                b.unsupported.append(f"ptq.search.{k}: the installed ptq config has no such setting")
                del search[k]
        add("ptq", settings, search=search, max_trials=max_trials)
    if not stages:
        b.unsupported.append("(no compression section): the recipe only has settings; slim will choose the strategy itself")
    try:
        recipe = Recipe(stages=tuple(stages), train=TrainConfig.from_dict(train), target=TargetConfig.from_dict(target))
    except ConfigError as exc:
        raise ConfigError(f"ACT recipe: translated settings are invalid: {exc}") from exc
    return ActTranslation(recipe=recipe, mapped=b.mapped, unsupported=b.unsupported)


def load_any_recipe(
    source: str | os.PathLike[str] | dict[str, Any] | Recipe, *, allow_keys: tuple[str, ...] = ()
) -> tuple[Recipe, ActTranslation | None]:
    """Load a slim recipe, or translate an ACT recipe; returns ``(recipe, translation or None)``.

    ``allow_keys`` are further top-level keys that are accepted and ignored.
    """
    from slim_auto.recipe import load_recipe
    from slim_auto.stages import known_kinds

    if isinstance(source, Recipe):
        return source, None
    data = source
    if not isinstance(source, dict):
        data = load_yaml(source)
    if is_act_recipe(data):
        translation = translate_act({k: v for k, v in data.items() if k not in allow_keys})
        return translation.recipe, translation
    if isinstance(source, (str, os.PathLike)) and not isinstance(source, dict):
        return load_recipe(Path(source) if _is_file(source) else source, known_kinds=known_kinds(), allow_keys=allow_keys), None
    return load_recipe(data, known_kinds=known_kinds(), allow_keys=allow_keys), None  # type: ignore[arg-type]


def _is_file(source: Any) -> bool:
    s = str(source)
    return "\n" not in s and s.endswith((".yaml", ".yml")) and Path(s).is_file()


__all__.append("load_any_recipe")
