"""Stage runners: each recipe stage calls the package that owns the algorithm.

A stage turns a :class:`ModelState` into a new one. The algorithms live in
slim-prune, slim-quant, slim-distill and slim-nas; this module only builds their
configs from the recipe (``XConfig.from_dict(settings)``), calls their one verb,
and, for training stages, runs :func:`slim_auto.training.finetune`.

Users add stages with :data:`STAGES`::

    @STAGES.register("my_stage")
    class MyStage(Stage):
        kind = "my_stage"
        def run(self, state, cfg, ctx): ...
"""

from __future__ import annotations

import copy
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slim_auto.recipe import STAGE_KINDS, Recipe, StageSpec, TrainConfig, stage_where
from slim_auto.training import DEFAULT_DISTILL, TrainOutcome, finetune, layer_predict
from slim_core import ConfigError, Registry, SlimConfig, SlimError

__all__ = [
    "STAGES",
    "Stage",
    "ModelState",
    "StageContext",
    "StageUnavailableError",
    "config_fields",
    "known_kinds",
    "check_recipe",
    "get_stage",
]

STAGES = Registry("stage")


class StageUnavailableError(ConfigError):
    """A recipe names a stage whose package API is not available in this version."""


@dataclass
class ModelState:
    """The model between stages.

    Attributes:
        layer: the dygraph Layer (None when the input is an inference model that no stage turned into a Layer).
        path: prefix of an inference model when ``layer`` is None.
        applied: compression applied so far, for the manifest and the report (``{"stage": ..., ...}``).
        quantized: whether the layer holds quantization (export goes through slim-quant's path).
    """

    layer: Any = None
    path: Path | None = None
    applied: list[dict[str, Any]] = field(default_factory=list)
    quantized: bool = False

    def copy(self) -> ModelState:
        return ModelState(
            layer=copy.deepcopy(self.layer) if self.layer is not None else None,
            path=self.path,
            applied=[dict(a) for a in self.applied],
            quantized=self.quantized,
        )


@dataclass
class StageContext:
    """What a stage may use besides the model.

    Attributes:
        teacher: the original model, frozen (None for an inference-model input).
        train_data: user training batches (may be None when no stage trains).
        calib_data: a few batches for calibration (the first ``calib_batches`` of the train data).
        eval_fn: ``eval_fn(predict) -> float``.
        example_inputs: numpy arrays, one per model input (batch of 1..N).
        input_spec: Paddle InputSpec list.
        input_names: feed names.
        train: the training settings of the current stage.
        reached: ``metric -> bool``: whether the metric target is met.
        deadline: ``time.monotonic()`` deadline or None.
        work_dir: scratch directory for the stage.
        record: what a stage decided beyond its settings (e.g. the chosen subnet); saved with the
            checkpoint and given back to :meth:`Stage.rebuild` on resume.
        max_metric_drop: the target's allowed drop (for stages that choose among variants).
        max_trials: the recipe's ``max_trials`` for the stage (searches inside a stage).
    """

    teacher: Any
    train_data: Any
    calib_data: Any
    eval_fn: Callable[[Callable[..., np.ndarray]], float]
    example_inputs: list[np.ndarray]
    input_spec: list[Any]
    input_names: list[str]
    train: TrainConfig = field(default_factory=TrainConfig)
    reached: Callable[[float], bool] | None = None
    deadline: float | None = None
    work_dir: Path | None = None
    outcome: TrainOutcome | None = None
    record: dict[str, Any] = field(default_factory=dict)
    max_metric_drop: float | None = None
    max_trials: int = 0

    def time_left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()


class Stage:
    """Base of stage runners.

    Class attributes:
        kind: the recipe name.
        config: ``"package:ClassName"`` of the settings' config class.
        structural: True when the stage changes the architecture; on resume it is replayed
            (:meth:`rebuild`) before the checkpointed weights are loaded.
        trains: True when the stage fine-tunes (needs ``train_data``).
        needs_layer: False when the stage also works on an inference model path.
    """

    kind = ""
    config = ""
    structural = True
    trains = False
    needs_layer = True

    def config_class(self) -> type[SlimConfig]:
        """The settings' config class; raises :class:`StageUnavailableError` when the package lacks it."""
        mod_name, _, cls_name = self.config.partition(":")
        try:
            mod = importlib.import_module(mod_name)
            cls = getattr(mod, cls_name)
        except (ImportError, AttributeError) as exc:
            raise StageUnavailableError(f"stage {self.kind!r} is not available in this version ({mod_name}.{cls_name} is missing)") from exc
        return cls

    def api(self, module: str, name: str) -> Any:
        """A function of a sibling package; :class:`StageUnavailableError` when missing."""
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise StageUnavailableError(f"stage {self.kind!r} is not available in this version ({module}.{name} is missing)") from exc

    def check_available(self) -> None:
        """Raise :class:`StageUnavailableError` unless every API the stage calls exists."""
        self.config_class()

    def make_config(self, settings: dict[str, Any]) -> SlimConfig:
        return self.config_class().from_dict(settings)

    def run(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:  # pragma: no cover - abstract
        raise NotImplementedError

    def rebuild(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:
        """Rebuild the architecture after this stage (for resume); weights are loaded afterwards."""
        return self.run(state, cfg, ctx)


def _layer(state: ModelState, kind: str) -> Any:
    if state.layer is None:
        raise ConfigError(
            f"stage {kind!r} needs a dygraph Layer; an inference model input supports the stages: "
            + ", ".join(k for k in known_kinds() if not get_stage(k).needs_layer)
        )
    return state.layer


def _train_with_distill(
    state: ModelState, ctx: StageContext, distill: dict[str, Any] | None, desc: str, optimizer_hook: Callable[[Any], Any] | None = None
) -> TrainOutcome:
    if ctx.train_data is None:
        raise ConfigError(f"stage {desc!r} fine-tunes the model and needs train_data")
    return finetune(
        state.layer,
        ctx.teacher,
        ctx.train_data,
        ctx.train,
        distill=distill or ctx.train.distill or None,
        eval_fn=ctx.eval_fn,
        reached=ctx.reached,
        deadline=ctx.deadline,
        input_names=ctx.input_names,
        desc=desc,
        optimizer_hook=optimizer_hook,
    )


@STAGES.register("prune")
class PruneStage(Stage):
    """Structured pruning with :func:`slim_prune.prune_` (channels removed physically)."""

    kind = "prune"
    config = "slim_prune:PruneConfig"

    def check_available(self) -> None:
        super().check_available()
        self.api("slim_prune", "prune_")

    def run(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:
        import paddle

        prune_ = self.api("slim_prune", "prune_")
        layer = _layer(state, self.kind)
        result = prune_(layer, cfg, example_inputs=[paddle.to_tensor(a) for a in ctx.example_inputs])
        info: dict[str, Any] = {"stage": "prune", **cfg.to_dict()}
        for key in ("flops_before", "flops_after", "params_before", "params_after"):
            if hasattr(result, key):
                info[key] = int(getattr(result, key))
        state.applied.append(info)
        return state


@STAGES.register("sparsity")
class SparsityStage(Stage):
    """Unstructured (``SparsityConfig``) or N:M (``NMConfig``: settings with ``n``/``m``) sparsity
    with slim-prune, then fine-tuning with distillation while the masks keep the zeros."""

    kind = "sparsity"
    config = "slim_prune:SparsityConfig"
    trains = True

    def _nm(self, settings: dict[str, Any]) -> bool:
        return "n" in settings or "m" in settings

    def make_config(self, settings: dict[str, Any]) -> SlimConfig:
        if self._nm(settings):
            mod_cfg = self.api("slim_prune", "NMConfig")
            return mod_cfg.from_dict(settings)
        return super().make_config(settings)

    def check_available(self) -> None:
        super().check_available()
        self.api("slim_prune", "sparsify_")
        self.api("slim_prune", "sparsify_nm_")

    def run(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:
        layer = _layer(state, self.kind)
        nm = type(cfg).__name__ == "NMConfig"
        masks = self.api("slim_prune", "sparsify_nm_" if nm else "sparsify_")(layer, cfg)
        if ctx.train_data is not None:
            ctx.outcome = _train_with_distill(state, ctx, None, "sparsity fine-tune", optimizer_hook=masks.attach)
            masks.apply()  # the zeros hold after the last step too
        state.applied.append({"stage": "sparsity", **cfg.to_dict()})
        return state

    def rebuild(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:
        state.applied.append({"stage": "sparsity", **cfg.to_dict()})
        return state  # the zeros are in the checkpointed weights


@STAGES.register("distill")
class DistillStage(Stage):
    """Fine-tuning with distillation from the original model (slim-distill's Distiller)."""

    kind = "distill"
    config = "slim_distill:DistillConfig"
    structural = False
    trains = True

    def check_available(self) -> None:
        super().check_available()
        self.api("slim_distill", "Distiller")

    def make_config(self, settings: dict[str, Any]) -> SlimConfig:
        return super().make_config(settings or DEFAULT_DISTILL)

    def run(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:
        _layer(state, self.kind)
        ctx.outcome = _train_with_distill(state, ctx, cfg.to_dict(), "distill")
        state.applied.append({"stage": "distill", "steps": ctx.outcome.steps})
        return state

    def rebuild(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:
        state.applied.append({"stage": "distill"})
        return state


@STAGES.register("ptq")
class PTQStage(Stage):
    """Post-training quantization with :func:`slim_quant.quantize_` (or ``quantize_inference_model`` for a path)."""

    kind = "ptq"
    config = "slim_quant:PTQConfig"
    needs_layer = False

    def check_available(self) -> None:
        super().check_available()
        self.api("slim_quant", "quantize_")

    def run(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:
        if state.layer is None:
            qim = self.api("slim_quant", "quantize_inference_model")
            assert ctx.work_dir is not None
            out = ctx.work_dir / "ptq-model"
            qim(str(state.path), cfg, ctx.calib_data, str(out), overwrite=True, latency_guard=False)
            state.path = out
        else:
            quantize_ = self.api("slim_quant", "quantize_")
            eval_fn = None
            if getattr(cfg, "max_metric_drop", None) is not None:
                user_eval = ctx.eval_fn

                def eval_fn(model: Any) -> float:  # slim-quant evaluates Layers; the user's eval_fn takes a predict function
                    return float(user_eval(layer_predict(model)))

            result = quantize_(state.layer, cfg, calib_data=ctx.calib_data, eval_fn=eval_fn, input_names=ctx.input_names)
            if result is not None and hasattr(result, "parameters"):
                state.layer = result
            qstate = getattr(state.layer, "slim_quant_state", None)
            skipped = dict(getattr(qstate, "skipped", None) or {})
            if skipped:
                state.applied.append(
                    {"stage": "ptq-skipped-layers", "layers": skipped, "metrics": dict(getattr(qstate, "metrics", {}) or {})}
                )
        state.quantized = True
        state.applied.append({"stage": "ptq", **cfg.to_dict()})
        return state


@STAGES.register("qat")
class QATStage(Stage):
    """Quantization-aware training: :func:`slim_quant.prepare_qat`, fine-tuning with distillation, :func:`slim_quant.convert`."""

    kind = "qat"
    config = "slim_quant:QATConfig"
    trains = True

    def check_available(self) -> None:
        super().check_available()
        self.api("slim_quant", "prepare_qat")
        self.api("slim_quant", "convert")

    def _prepare(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> None:
        prepare_qat = self.api("slim_quant", "prepare_qat")
        res = prepare_qat(_layer(state, self.kind), cfg, ctx.calib_data, input_names=ctx.input_names)
        if res is not None and hasattr(res, "parameters"):
            state.layer = res

    def _convert(self, state: ModelState, cfg: SlimConfig) -> None:
        convert = self.api("slim_quant", "convert")
        res = convert(state.layer)
        if res is not None and hasattr(res, "parameters"):
            state.layer = res
        state.quantized = True
        state.applied.append({"stage": "qat", **cfg.to_dict()})

    def run(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:
        self._prepare(state, cfg, ctx)
        ctx.outcome = _train_with_distill(state, ctx, None, "qat")
        self._convert(state, cfg)
        return state

    def rebuild(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:
        self._prepare(state, cfg, ctx)
        self._convert(state, cfg)
        return state


@STAGES.register("weight_only")
class WeightOnlyStage(Stage):
    """Weight-only int8/int4 quantization of Linear layers with :func:`slim_quant.quantize_weight_only_`.

    The packed layers dequantize in Paddle ops, so the model exports as a normal Layer.
    """

    kind = "weight_only"
    config = "slim_quant:WeightOnlyConfig"

    def check_available(self) -> None:
        super().check_available()
        self.api("slim_quant", "quantize_weight_only_")

    def run(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:
        quantize = self.api("slim_quant", "quantize_weight_only_")
        result = quantize(_layer(state, self.kind), cfg, ctx.calib_data, input_names=ctx.input_names)
        if result is not None and hasattr(result, "parameters"):
            state.layer = result
        state.applied.append({"stage": "weight_only", **cfg.to_dict()})
        return state


@STAGES.register("nas")
class NASStage(Stage):
    """Once-for-all NAS with slim-nas: train the supernet (progressive shrinking, in-place
    distillation), search its subnets for accuracy vs FLOPs, and keep the smallest subnet
    within the metric target of the largest one.

    The model must be a :class:`slim_nas.Supernet` (``OFAResNet``, ``OFAMobileNetV2`` or a
    subclass); settings are an ``OFAConfig`` dict; ``max_trials`` of the stage sets the
    number of subnets searched (default 12, random search). The stage's output is the
    exported plain Layer of the chosen subnet.
    """

    kind = "nas"
    config = "slim_nas:OFAConfig"
    trains = True

    def check_available(self) -> None:
        super().check_available()
        for name in ("OFA", "Supernet", "search", "recalibrate_bn"):
            self.api("slim_nas", name)

    def _supernet(self, state: ModelState) -> Any:
        layer = _layer(state, self.kind)
        if not isinstance(layer, self.api("slim_nas", "Supernet")):
            raise ConfigError(
                f"stage 'nas' needs a slim_nas.Supernet (OFAResNet, OFAMobileNetV2 or a Supernet subclass) as the model, "
                f"got {type(layer).__name__}; build the supernet with slim_nas and pass it to AutoCompression"
            )
        return layer

    def _batches(self, ctx: StageContext) -> list[tuple[Any, Any]]:
        import paddle

        from slim_core import Batches

        out = []
        for inputs, rest in Batches(ctx.train_data, ctx.input_names).with_rest():
            if not rest:
                raise ConfigError("stage 'nas' trains the supernet on labels: train_data must be (x, label) batches")
            out.append((paddle.to_tensor(inputs[ctx.input_names[0]]), paddle.to_tensor(np.asarray(rest[0]))))
        return out

    def run(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:
        import paddle

        supernet = self._supernet(state)
        if ctx.train_data is None:
            raise ConfigError("stage 'nas' trains the supernet and needs train_data")
        batches = self._batches(ctx)
        ofa = self.api("slim_nas", "OFA")(supernet, cfg)
        history = ofa.train(batches)
        recalibrate = self.api("slim_nas", "recalibrate_bn")
        example = [paddle.to_tensor(a) for a in ctx.example_inputs]

        def measure(config: dict[str, Any]) -> tuple[float, float]:
            sub = supernet.export(config)
            recalibrate(sub, batches)
            sub.eval()
            from slim_analysis import flops

            return float(ctx.eval_fn(layer_predict(sub))), float(flops(sub, example_inputs=example))

        largest = ofa.space().largest()
        top_metric, top_flops = measure(largest)
        result = self.api("slim_nas", "search")(
            measure, ofa.space(), strategy="random", n_trials=ctx.max_trials or 12, directions=["maximize", "minimize"], seed=ctx.train.seed
        )
        drop = ctx.max_metric_drop if ctx.max_metric_drop is not None else 0.0
        trials = [(dict(t.config), t.values) for t in result.trials if t.state == "complete" and t.values is not None]
        trials.append((largest, (top_metric, top_flops)))
        ok = [t for t in trials if t[1][0] >= top_metric - drop]
        chosen = min(ok, key=lambda t: (t[1][1], -t[1][0]))[0]
        ctx.record = {"subnet": chosen, "trials": [{"config": c, "metric": v[0], "flops": v[1]} for c, v in trials]}
        state.layer = supernet.export(chosen)
        recalibrate(state.layer, batches)
        state.layer.eval()
        state.applied.append({"stage": "nas", "subnet": chosen, "phases": [h["phase"] for h in history]})
        return state

    def rebuild(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:
        supernet = self._supernet(state)
        chosen = ctx.record.get("subnet")
        if chosen is None:
            raise ConfigError("cannot resume stage 'nas': the checkpoint holds no chosen subnet")
        state.layer = supernet.export(chosen)
        state.applied.append({"stage": "nas", "subnet": chosen})
        return state


# ------------------------------------------------------------------ helpers
def known_kinds() -> list[str]:
    """Stage kinds a recipe may name: the built-in ones plus registered stages."""
    return list(dict.fromkeys([*STAGE_KINDS, *STAGES.names()]))


def get_stage(kind: str) -> Stage:
    """The runner of ``kind``; :class:`StageUnavailableError` for a kind this version cannot run."""
    if kind in STAGES:
        return STAGES[kind]()
    if kind in STAGE_KINDS:
        raise StageUnavailableError(f"stage {kind!r} is not available in this version")
    return STAGES.get(kind)()


def config_fields(kind: str) -> list[str] | None:
    """Field names of the installed config class of stage ``kind`` (None when unavailable)."""
    try:
        return get_stage(kind).config_class().field_names()
    except (ConfigError, SlimError):
        return None


def check_recipe(recipe: Recipe, *, has_layer: bool, has_train_data: bool) -> list[SlimConfig]:
    """Validate every stage before any work: availability, settings, inputs it needs.

    Returns:
        The built config of each stage (search values are checked too).

    Raises:
        ConfigError: naming the recipe line and stage.
    """
    configs = []
    for i, spec in enumerate(recipe.stages):
        where = stage_where(recipe, i)
        try:
            stage = get_stage(spec.kind)
            stage.check_available()
            cfg = stage.make_config(spec.settings)
            for key, values in spec.search.items():
                for v in values:
                    stage.make_config({**spec.settings, key: v})
        except ConfigError as exc:
            raise type(exc)(f"{where}: {exc}") from exc
        if stage.needs_layer and not has_layer:
            raise ConfigError(
                f"{where}: stage {spec.kind!r} needs a dygraph Layer, but the model is an inference model; "
                f"stages that run on inference models: {', '.join(k for k in STAGES.names() if not STAGES[k].needs_layer)}"
            )
        if stage.trains and not has_train_data and spec.kind != "sparsity":
            raise ConfigError(f"{where}: stage {spec.kind!r} fine-tunes the model and needs train_data")
        recipe.train_for(spec)
        configs.append(cfg)
    return configs


def settings_grid(spec: StageSpec) -> list[dict[str, Any]]:
    """Every settings dict of ``spec``'s search grid, in order (just ``spec.settings`` without a search)."""
    grid = [dict(spec.settings)]
    for key, values in spec.search.items():
        grid = [{**g, key: v} for g in grid for v in values]
    return grid


__all__.append("settings_grid")
