"""Stage runners: each recipe stage calls the package that owns the algorithm.

A stage turns a :class:`ModelState` into a new one. The algorithms live in
slim-prune, slim-quant, slim-distill and slim-nas; this module builds their
configs from the recipe (``XConfig.from_dict(settings)``) and calls their verb.

Stages that only apply a config (``prune``, ``ptq``, ``weight_only``) are one
generic :class:`ApplyStage`, dispatched through :data:`APPLY_HANDLERS`, a registry
keyed by config type (the way torchao's ``quantize_`` dispatches on its config
classes). A handler returns one result type, :class:`Applied` (``model, applied,
needs_training``). Stages that train (``sparsity``, ``distill``, ``qat``, ``nas``)
have their own classes.

Users add config handlers and stages::

    @register_apply(MyConfig)
    def apply_mine(state, cfg, ctx): return Applied(model=..., applied={"stage": "mine"})

    STAGES.register("mine")(type("MineStage", (ApplyStage,), {"kind": "mine", "config_cls": MyConfig}))
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import slim_distill
import slim_nas
import slim_prune
import slim_quant
from slim_auto.recipe import STAGE_KINDS, Recipe, StageSpec, TrainConfig, stage_where
from slim_auto.routes import ROUTES, Route, qdq_target, save_calibration
from slim_auto.training import DEFAULT_DISTILL, TrainOutcome, finetune, layer_predict
from slim_core import ConfigError, Registry, SlimConfig, SlimError
from slim_core.log import get_logger, native_output

__all__ = [
    "STAGES",
    "APPLY_HANDLERS",
    "Applied",
    "ApplyStage",
    "Stage",
    "ModelState",
    "StageContext",
    "StageUnavailableError",
    "config_fields",
    "known_kinds",
    "check_recipe",
    "get_stage",
    "register_apply",
]

STAGES = Registry("stage")
log = get_logger(__name__)


class StageUnavailableError(ConfigError):
    """A recipe names a stage whose package API is not available in this version."""


@dataclass
class ModelState:
    """The model between stages.

    Attributes:
        layer: the dygraph Layer (None when the input is an inference model that no stage turned into a Layer).
        path: prefix or directory of an inference model when ``layer`` is None.
        applied: compression applied so far, for the manifest and the report (``{"stage": ..., ...}``).
        int8: whether the model holds INT8 quantization (a Layer is exported through :func:`slim_quant.export`).
        export_dir: a directory already holding this state's export (a search trial's), reused instead of exporting again.
        runtime: the route (runtime) an inference model was converted for.
    """

    layer: Any = None
    path: Path | None = None
    applied: list[dict[str, Any]] = field(default_factory=list)
    int8: bool = False
    export_dir: Path | None = None
    runtime: str = ""

    def copy(self) -> ModelState:
        return ModelState(
            layer=copy.deepcopy(self.layer) if self.layer is not None else None,
            path=self.path,
            applied=[dict(a) for a in self.applied],
            int8=self.int8,
            runtime=self.runtime,
        )


_dir_counter = itertools.count()


@dataclass
class StageContext:
    """What a stage may use besides the model; every field comes from the engine.

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
        higher_is_better: the metric's direction.
        max_trials: the recipe's ``max_trials`` for the stage (searches inside a stage).
        route: the runtime an inference model is converted for (PTQ of inference models).
        proven_routes: routes whose converter already ran without crashing in this run.
        threads: CPU threads for runtimes.
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
    higher_is_better: bool = True
    max_trials: int = 0
    route: Route | None = None
    proven_routes: set[str] = field(default_factory=set)
    threads: int = 2

    def time_left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def new_dir(self, label: str) -> Path:
        """A directory of its own under ``work_dir`` (trials never share an output directory)."""
        assert self.work_dir is not None
        self.work_dir.mkdir(parents=True, exist_ok=True)
        while True:
            d = self.work_dir / f"{label}-{next(_dir_counter)}"
            if not d.exists():
                return d

    def calib_dicts(self) -> list[dict[str, np.ndarray]]:
        """The calibration batches as ``{input name: array}``."""
        out = []
        for b in self.calib_data:
            arrays = b if isinstance(b, (list, tuple)) else [b]
            out.append({n: np.asarray(a) for n, a in zip(self.input_names, arrays)})
        return out


@dataclass
class Applied:
    """What applying a config did: the one result type of every config handler.

    Attributes:
        model: the new model (a Layer, or the path of an inference model).
        applied: the manifest/report entry (``{"stage": kind, **settings, ...}``).
        needs_training: the model should be fine-tuned before it is used (e.g. after heavy pruning).
        int8: the model now holds INT8 quantization.
        extra: further manifest entries (e.g. layers kept in float).
    """

    model: Any
    applied: dict[str, Any]
    needs_training: bool = False
    int8: bool = False
    extra: list[dict[str, Any]] = field(default_factory=list)


#: config type -> ``handler(state, cfg, ctx) -> Applied``
APPLY_HANDLERS: dict[type, Callable[[ModelState, Any, StageContext], Applied]] = {}


def register_apply(config_cls: type) -> Callable[[Callable[..., Applied]], Callable[..., Applied]]:
    """Register the handler that applies configs of type ``config_cls`` (subclasses included)."""

    def deco(fn: Callable[..., Applied]) -> Callable[..., Applied]:
        APPLY_HANDLERS[config_cls] = fn
        return fn

    return deco


def handler_for(cfg: Any) -> Callable[[ModelState, Any, StageContext], Applied]:
    """The handler of ``cfg``'s type (the closest registered base class)."""
    for cls in type(cfg).__mro__:
        if cls in APPLY_HANDLERS:
            return APPLY_HANDLERS[cls]
    raise StageUnavailableError(f"no handler applies a {type(cfg).__name__}; register one with slim_auto.stages.register_apply")


class Stage:
    """Base of stage runners.

    Class attributes:
        kind: the recipe name.
        config_cls: the settings' config class.
        structural: True when the stage changes the architecture; on resume it is replayed
            (:meth:`rebuild`) before the checkpointed weights are loaded.
        trains: True when the stage fine-tunes (needs ``train_data``).
        needs_layer: False when the stage also works on an inference model path.
        per_route: True when, on an inference model, the stage runs once per allowed runtime.
    """

    kind = ""
    config_cls: type[SlimConfig] = SlimConfig
    structural = True
    trains = False
    needs_layer = True
    per_route = False

    def config_class(self) -> type[SlimConfig]:
        """The settings' config class."""
        return self.config_cls

    def check_available(self) -> None:
        """Raise :class:`StageUnavailableError` unless the stage can run in this installation."""

    def make_config(self, settings: dict[str, Any]) -> SlimConfig:
        return self.config_class().from_dict(settings)

    def run(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:  # pragma: no cover - abstract
        raise NotImplementedError

    def rebuild(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:
        """Rebuild the architecture after this stage (for resume); weights are loaded afterwards."""
        return self.run(state, cfg, ctx)


class ApplyStage(Stage):
    """A stage that applies one config through its type's handler in :data:`APPLY_HANDLERS`."""

    def run(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:
        res = handler_for(cfg)(state, cfg, ctx)
        if state.layer is not None or res.model is None or hasattr(res.model, "parameters"):
            state.layer = res.model if res.model is not None else state.layer
        else:
            state.path = Path(res.model)
        state.int8 = state.int8 or res.int8
        state.applied.extend(res.extra)
        state.applied.append(res.applied)
        return state


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


def _as_layer(result: Any, layer: Any) -> Any:
    """The verbs return the model (or None when they work in place)."""
    return result if result is not None and hasattr(result, "parameters") else layer


# ------------------------------------------------------------------ config handlers
@register_apply(slim_prune.PruneConfig)
def apply_prune(state: ModelState, cfg: Any, ctx: StageContext) -> Applied:
    """Structured pruning with :func:`slim_prune.prune_` (channels removed physically)."""
    import paddle

    layer = _layer(state, "prune")
    result = slim_prune.prune_(layer, cfg, example_inputs=[paddle.to_tensor(a) for a in ctx.example_inputs])
    info: dict[str, Any] = {"stage": "prune", **cfg.to_dict()}
    for key in ("flops_before", "flops_after", "params_before", "params_after"):
        if hasattr(result, key):
            info[key] = int(getattr(result, key))
    return Applied(model=layer, applied=info)


@register_apply(slim_quant.WeightOnlyConfig)
def apply_weight_only(state: ModelState, cfg: Any, ctx: StageContext) -> Applied:
    """Weight-only int8/int4 quantization of Linear layers (packed layers dequantize in Paddle ops)."""
    layer = _layer(state, "weight_only")
    result = slim_quant.quantize_weight_only_(layer, cfg, ctx.calib_data, input_names=ctx.input_names)
    return Applied(model=_as_layer(result, layer), applied={"stage": "weight_only", **cfg.to_dict()})


@register_apply(slim_quant.PTQConfig)
def apply_ptq(state: ModelState, cfg: Any, ctx: StageContext) -> Applied:
    """PTQ: :func:`slim_quant.quantize_` on a Layer; on an inference model, the context's route."""
    if state.layer is None:
        return _ptq_inference(state, cfg, ctx)
    eval_fn = None
    if cfg.max_metric_drop is not None:
        user_eval = ctx.eval_fn

        def eval_fn(model: Any) -> float:  # slim-quant evaluates Layers; the user's eval_fn takes a predict function
            return float(user_eval(layer_predict(model)))

    result = slim_quant.quantize_(state.layer, cfg, calib_data=ctx.calib_data, eval_fn=eval_fn, input_names=ctx.input_names)
    layer = _as_layer(result, state.layer)
    extra = []
    qstate = getattr(layer, "slim_quant_state", None)
    skipped = dict(getattr(qstate, "skipped", None) or {})
    if skipped:
        extra.append({"stage": "ptq-skipped-layers", "layers": skipped, "metrics": dict(getattr(qstate, "metrics", {}) or {})})
    return Applied(model=layer, applied={"stage": "ptq", **cfg.to_dict()}, int8=True, extra=extra)


def _ptq_inference(state: ModelState, cfg: Any, ctx: StageContext) -> Applied:
    """An inference model: convert for the context's route in a child process (a native crash fails only
    this route); with ``max_metric_drop`` the layer-skipping search then runs here with the engine's eval_fn."""
    from slim_auto.isolate import run_isolated

    route = ctx.route or ROUTES["paddle"]
    out = ctx.new_dir(f"ptq-{route.name}")
    settings = cfg.to_dict()
    if cfg.max_metric_drop is None or route.name not in ctx.proven_routes:
        assert ctx.work_dir is not None
        calib = save_calibration(ctx.calib_dicts(), ctx.work_dir / "calib.npz")
        info = run_isolated(
            route.converter,
            {
                "source": str(state.path),
                "config": {**settings, "max_metric_drop": None},
                "calib": calib,
                "out": str(out),
                "format": route.format,
                "backend": route.backend,
                "threads": ctx.threads,
            },
            timeout=route.timeout,
            work_dir=ctx.work_dir,
        )
        ctx.proven_routes.add(route.name)
        log.debug("route %s converted: %s", route.name, info)
    extra = []
    if cfg.max_metric_drop is not None:
        with native_output():
            res = slim_quant.quantize_inference_model(
                str(state.path),
                cfg,
                ctx.calib_dicts(),
                str(out),
                formats=(route.format,),
                eval_fn=ctx.eval_fn,
                overwrite=True,
                latency_guard=False,
                threads=ctx.threads,
                onnx_target=qdq_target(route.format, route.backend),
            )
        skipped = dict(res.skipped.get(route.format) or {})
        if skipped:
            extra.append({"stage": "ptq-skipped-layers", "layers": skipped, "metrics": dict(res.metrics)})
    state.runtime = route.name
    return Applied(model=out, applied={"stage": "ptq", "runtime": route.name, **settings}, int8=True, extra=extra)


@STAGES.register("prune")
class PruneStage(ApplyStage):
    """Structured pruning with :func:`slim_prune.prune_` (channels removed physically)."""

    kind = "prune"
    config_cls = slim_prune.PruneConfig


@STAGES.register("ptq")
class PTQStage(ApplyStage):
    """Post-training quantization: :func:`slim_quant.quantize_` on a Layer, or per runtime route on an inference model."""

    kind = "ptq"
    config_cls = slim_quant.PTQConfig
    needs_layer = False
    per_route = True


@STAGES.register("weight_only")
class WeightOnlyStage(ApplyStage):
    """Weight-only int8/int4 quantization of Linear layers with :func:`slim_quant.quantize_weight_only_`."""

    kind = "weight_only"
    config_cls = slim_quant.WeightOnlyConfig


@STAGES.register("sparsity")
class SparsityStage(Stage):
    """Unstructured (``SparsityConfig``) or N:M (``NMConfig``: settings with ``n``/``m``) sparsity
    with slim-prune, then fine-tuning with distillation while the masks keep the zeros."""

    kind = "sparsity"
    config_cls = slim_prune.SparsityConfig
    trains = True

    def make_config(self, settings: dict[str, Any]) -> SlimConfig:
        if "n" in settings or "m" in settings:
            return slim_prune.NMConfig.from_dict(settings)
        return super().make_config(settings)

    def run(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> ModelState:
        layer = _layer(state, self.kind)
        sparsify = slim_prune.sparsify_nm_ if isinstance(cfg, slim_prune.NMConfig) else slim_prune.sparsify_
        masks = sparsify(layer, cfg)
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
    config_cls = slim_distill.DistillConfig
    structural = False
    trains = True

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


@STAGES.register("qat")
class QATStage(Stage):
    """Quantization-aware training: :func:`slim_quant.prepare_qat`, fine-tuning with distillation, :func:`slim_quant.convert`."""

    kind = "qat"
    config_cls = slim_quant.QATConfig
    trains = True

    def _prepare(self, state: ModelState, cfg: SlimConfig, ctx: StageContext) -> None:
        layer = _layer(state, self.kind)
        state.layer = _as_layer(slim_quant.prepare_qat(layer, cfg, ctx.calib_data, input_names=ctx.input_names), layer)

    def _convert(self, state: ModelState, cfg: SlimConfig) -> None:
        state.layer = _as_layer(slim_quant.convert(state.layer), state.layer)
        state.int8 = True
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
    config_cls = slim_nas.OFAConfig
    trains = True

    def _supernet(self, state: ModelState) -> Any:
        layer = _layer(state, self.kind)
        if not isinstance(layer, slim_nas.Supernet):
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

        from slim_analysis import flops

        supernet = self._supernet(state)
        if ctx.train_data is None:
            raise ConfigError("stage 'nas' trains the supernet and needs train_data")
        batches = self._batches(ctx)
        ofa = slim_nas.OFA(supernet, cfg)
        history = ofa.train(batches)
        example = [paddle.to_tensor(a) for a in ctx.example_inputs]

        def measure(config: dict[str, Any]) -> tuple[float, float]:
            sub = supernet.export(config)
            slim_nas.recalibrate_bn(sub, batches)
            sub.eval()
            return float(ctx.eval_fn(layer_predict(sub))), float(flops(sub, example_inputs=example))

        largest = ofa.space().largest()
        top_metric, top_flops = measure(largest)
        result = slim_nas.search(
            measure, ofa.space(), strategy="random", n_trials=ctx.max_trials or 12, directions=["maximize", "minimize"], seed=ctx.train.seed
        )
        drop = ctx.max_metric_drop if ctx.max_metric_drop is not None else 0.0
        trials = [(dict(t.config), t.values) for t in result.trials if t.state == "complete" and t.values is not None]
        trials.append((largest, (top_metric, top_flops)))
        ok = [t for t in trials if t[1][0] >= top_metric - drop]
        chosen = min(ok, key=lambda t: (t[1][1], -t[1][0]))[0]
        ctx.record = {"subnet": chosen, "trials": [{"config": c, "metric": v[0], "flops": v[1]} for c, v in trials]}
        state.layer = supernet.export(chosen)
        slim_nas.recalibrate_bn(state.layer, batches)
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
