"""AutoCompression: run a recipe (or choose one) to an accuracy target, resumably, and report.

Example:
    >>> from slim_core import demo
    >>> model, _ = demo.train_demo_model(epochs=4)                         # doctest: +SKIP
    >>> x, y = demo.load_digits("test")                                    # doctest: +SKIP
    >>> ac = AutoCompression(model, train_data, accuracy_eval(x, y),       # doctest: +SKIP
    ...                      config={"stages": [{"ptq": {}}]}, example_inputs=[x[:1]],
    ...                      target={"max_metric_drop": 0.01}, out_dir="out")
    >>> result = ac.compress()                                             # doctest: +SKIP
    >>> print(result.to_markdown())                                        # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slim_auto.act import ActTranslation, load_any_recipe
from slim_auto.candidates import Candidate, meets_target, metric_ok, pareto_front, select_best, speedup, unmet_reasons
from slim_auto.measure import Measurement, export_state, measure_candidate, measure_latency, predictor_for
from slim_auto.recipe import Recipe, StageSpec, TargetConfig, TrainConfig
from slim_auto.report import RunSummary, before_after_markdown, write_report
from slim_auto.stages import ModelState, StageContext, check_recipe, get_stage
from slim_core import (
    Batches,
    ConfigError,
    DataError,
    ModelLoadError,
    OutputExistsError,
    SlimError,
    atomic_dir,
    atomic_write,
    load_inference_model,
    require_paddle,
    to_numpy,
)
from slim_core.model_io import resolve_model_path

__all__ = ["AutoCompression", "CompressionResult", "CompressionRunError", "accuracy_eval"]

_STATE = "state.json"
_CKPT = "checkpoints"
_MIN_FREE_FACTOR = 6  # free disk needed, in multiples of the model's parameter bytes


class CompressionRunError(SlimError):
    """The run cannot start or continue (e.g. the original model cannot be evaluated)."""


def accuracy_eval(x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> Callable[[Callable[..., np.ndarray]], float]:
    """An ``eval_fn`` computing top-1 accuracy of ``predict`` on ``(x, y)``.

    Example:
        >>> import numpy as np
        >>> fn = accuracy_eval(np.zeros((4, 3), "float32"), np.array([0, 1, 0, 1]))
        >>> fn(lambda a: np.tile([1.0, 0.0], (len(a), 1)))
        0.5
    """
    x = np.asarray(x)
    y = np.asarray(y).reshape(-1)
    if len(x) != len(y) or len(y) == 0:
        raise DataError(f"accuracy_eval: {len(x)} inputs but {len(y)} labels")

    def eval_fn(predict: Callable[..., np.ndarray]) -> float:
        correct = 0
        for i in range(0, len(y), batch_size):
            out = predict(x[i : i + batch_size])
            out = out[0] if isinstance(out, (list, tuple)) else out
            correct += int((np.asarray(out).argmax(-1) == y[i : i + batch_size]).sum())
        return correct / len(y)

    return eval_fn


@dataclass
class CompressionResult:
    """What :meth:`AutoCompression.compress` found.

    Attributes:
        best: the delivered candidate (saved under ``model_path``).
        baseline: the original model's measurements.
        candidates: every candidate measured, failed ones included.
        target: the target.
        target_met: whether ``best`` meets it.
        stopped: ``"target"``, ``"time"`` or ``"done"`` (every plan ran).
        out_dir: the output directory; ``model_path`` the deployable model's prefix.
        seconds: wall time of the compression (this process).
        translation: the ACT translation when an ACT recipe was given.
    """

    best: Candidate
    baseline: Candidate
    candidates: list[Candidate]
    target: TargetConfig
    target_met: bool
    stopped: str
    out_dir: Path
    model_path: Path
    seconds: float
    translation: ActTranslation | None = None
    summary: RunSummary | None = field(default=None, repr=False)

    @property
    def speedup(self) -> float | None:
        return speedup(self.best, self.baseline)

    @property
    def metric_drop(self) -> float | None:
        if self.best.metric is None or self.baseline.metric is None:
            return None
        return self.baseline.metric - self.best.metric

    @property
    def unmet_reasons(self) -> list[str]:
        """Why the target is not met (empty when it is)."""
        if self.target_met:
            return []
        return self.summary.unmet() if self.summary is not None else unmet_reasons(self.best, self.baseline, self.target)

    def to_markdown(self) -> str:
        """The before/after table (as printed by ``slim compress`` and ``slim demo``)."""
        assert self.summary is not None
        head = f"target: {self.target.describe()} -> {'met' if self.target_met else 'NOT met (' + '; '.join(self.unmet_reasons) + ')'}\n"
        return head + f"best: #{self.best.id} {self.best.name}\n\n" + before_after_markdown(self.summary)


@dataclass
class _Plan:
    name: str
    recipe: Recipe
    done: int = 0
    status: str = "pending"
    chosen: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "recipe": self.recipe.to_dict(),
            "done": self.done,
            "status": self.status,
            "chosen": self.chosen,
            "records": self.records,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _Plan:
        return cls(d["name"], Recipe.from_dict(d["recipe"]), d["done"], d["status"], d["chosen"], d.get("records", []))


def _as_list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


class AutoCompression:
    """Compress a model to a target with a recipe (or a strategy chosen from the model and target).

    Args:
        model: a dygraph ``paddle.nn.Layer`` (never modified: the run works on a copy), or the
            path of an inference model (PIR ``.json`` or legacy ``.pdmodel``; only read).
        train_data: batches for calibration and fine-tuning: a DataLoader, a list of
            ``(x, label)`` / ``x`` / dicts. Labels are optional (distillation needs none).
        eval_fn: ``eval_fn(predict) -> float`` where ``predict(*numpy_arrays) -> numpy`` runs a
            model; it is called with the exported model (Paddle Inference) for every candidate.
            Higher is better unless ``target.higher_is_better`` is False.
        config: a recipe (YAML path, YAML text, dict or :class:`Recipe`), a PaddleSlim ACT
            recipe (translated), or None to let slim choose the strategy.
        target: :class:`TargetConfig` or its dict; overrides the recipe's ``target``.
        example_inputs: one array (or a list, one per input) of model inputs; the batch
            dimension is kept dynamic in exports. Taken from ``train_data`` when omitted.
        input_spec: Paddle ``InputSpec`` list instead of ``example_inputs``.
        out_dir: output directory (model, metrics.json, report.md, report.html, checkpoints).
        max_time: time budget in seconds; the best result so far is delivered when it runs out.
        backends: latency backends (``"paddle"``, ``"onnxruntime"``); the first gives the speedup.
        batch_sizes: batch sizes to time; the first gives the speedup.
        threads: CPU threads for inference.
        calib_batches: batches of ``train_data`` used for calibration.
        resume: continue from the checkpoints in ``out_dir`` when they match this run (same
            model, recipe, target and input shapes); False starts over (needs ``overwrite``
            when checkpoints exist).
        overwrite: allow replacing what ``out_dir`` holds (checkpoints of another run, or
            results whose checkpoints were removed).
        title: heading of the report.

    Raises:
        ConfigError: malformed recipe (line and key), unavailable stage, bad target.
        ModelLoadError: the model path does not hold a model.
        OutputExistsError / SlimError: ``out_dir`` not writable or its disk too full, before any work.
    """

    def __init__(
        self,
        model: Any,
        train_data: Any = None,
        eval_fn: Callable[[Callable[..., np.ndarray]], float] | None = None,
        config: str | os.PathLike[str] | dict[str, Any] | Recipe | None = None,
        *,
        target: TargetConfig | dict[str, Any] | None = None,
        example_inputs: Any = None,
        input_spec: list[Any] | None = None,
        out_dir: str | os.PathLike[str] = "slim-auto-out",
        max_time: float | None = None,
        backends: Iterable[str] = ("paddle",),
        batch_sizes: Iterable[int] = (1,),
        threads: int = 2,
        calib_batches: int = 8,
        resume: bool = True,
        overwrite: bool = False,
        title: str = "slim auto-compression report",
    ) -> None:
        paddle = require_paddle()
        if eval_fn is None or not callable(eval_fn):
            raise ConfigError("eval_fn is required: a function eval_fn(predict) -> float (see slim_auto.accuracy_eval)")
        if max_time is not None and not max_time > 0:
            raise ConfigError(f"max_time={max_time!r} must be > 0 seconds")
        if calib_batches < 1:
            raise ConfigError(f"calib_batches={calib_batches} must be >= 1")
        self.eval_fn = eval_fn
        self.max_time = max_time
        self.backends = list(backends)
        self.batch_sizes = [int(b) for b in batch_sizes]
        if not self.backends or not self.batch_sizes:
            raise ConfigError("backends and batch_sizes need at least one entry each")
        self.threads = int(threads)
        self.resume = resume
        self.overwrite = overwrite
        self.title = title
        self.out_dir = Path(out_dir)
        rank = int(os.environ.get("PADDLE_TRAINER_ID", "0") or 0)
        if rank > 0:  # under paddle.distributed.launch only rank 0 writes out_dir itself
            self.out_dir = self.out_dir / f"rank-{rank}"
        # --- the model (never modified) --------------------------------------------------
        self._source_files: dict[str, str] = {}
        if isinstance(model, (str, os.PathLike)):
            prefix, _ = resolve_model_path(model)
            loaded = load_inference_model(prefix)  # proves it loads; raises ModelLoadError otherwise
            self.model_path: Path | None = prefix
            self.model_layer = None
            self.input_names = list(loaded.input_names)
            self._source_files = {str(p): _sha(p) for p in prefix.parent.iterdir() if p.name.startswith(prefix.name + ".")}
        elif isinstance(model, paddle.nn.Layer):
            self.model_path = None
            try:
                self.model_layer = copy.deepcopy(model)
            except Exception as exc:
                raise ModelLoadError(f"could not copy the model (the run never modifies yours): {exc}") from exc
            self.model_layer.eval()
            self.input_names = None  # type: ignore[assignment]
        else:
            raise ModelLoadError(f"model must be a paddle.nn.Layer or an inference model path, got {type(model).__name__}")
        # --- recipe -----------------------------------------------------------------------
        self.translation: ActTranslation | None = None
        if config is None:
            self.recipe: Recipe | None = None
        else:
            self.recipe, self.translation = load_any_recipe(config)
            if not self.recipe.stages:
                self.recipe = Recipe(train=self.recipe.train, target=self.recipe.target)
        if target is None:
            self.target = self.recipe.target if self.recipe is not None else TargetConfig(max_metric_drop=0.01)
        else:
            self.target = target if isinstance(target, TargetConfig) else TargetConfig.from_dict(target)
        self.train_config = self.recipe.train if self.recipe is not None else TrainConfig()
        # --- data and inputs --------------------------------------------------------------
        self.train_data = train_data
        self.calib_batches = calib_batches
        self.example_inputs, self.input_spec = self._inputs(example_inputs, input_spec)
        if self.input_names is None:
            self.input_names = [getattr(s, "name", None) or f"x{i}" for i, s in enumerate(self.input_spec)]
            if len(self.input_names) == 1 and self.input_names[0] == "x0":
                self.input_names = ["x"]
        self.calib_data = self._calib()
        if self.recipe is not None and self.recipe.stages:
            check_recipe(self.recipe, has_layer=self.model_layer is not None, has_train_data=train_data is not None)
        # --- output directory, before any work --------------------------------------------
        self._check_out_dir()

    # ------------------------------------------------------------------ setup helpers
    def _inputs(self, example_inputs: Any, input_spec: list[Any] | None) -> tuple[list[np.ndarray], list[Any]]:
        paddle = require_paddle()
        arrays: list[np.ndarray] | None = None
        if example_inputs is not None:
            arrays = [to_numpy(a) for a in _as_list(example_inputs)]
        elif self.train_data is not None:
            first = next(iter(Batches(self.train_data, self.input_names, limit=1)))
            arrays = list(first.values())
            if self.input_names is None:
                self.input_names = list(first)
        if input_spec is not None:
            spec = list(input_spec)
            if arrays is None:
                arrays = [
                    np.random.default_rng(0)
                    .standard_normal([1 if d in (None, -1) else d for d in s.shape])
                    .astype(str(s.dtype).replace("paddle.", ""))
                    for s in spec
                ]
            return arrays, spec
        if arrays is None:
            if self.model_path is not None:
                loaded = load_inference_model(self.model_path)
                shapes = _feed_shapes(loaded)
                arrays = [np.zeros([1 if d in (None, -1) else d for d in shp], "float32") for shp in shapes]
            else:
                raise DataError("give example_inputs (or input_spec, or train_data) so the model can be traced and exported")
        names = self.input_names or (["x"] if len(arrays) == 1 else [f"x{i}" for i in range(len(arrays))])
        spec = [paddle.static.InputSpec([None, *a.shape[1:]], str(a.dtype), n) for a, n in zip(arrays, names)]
        return [a[:1] if a.ndim else a for a in arrays], spec

    def _calib(self) -> Any:
        if self.train_data is None:
            return [dict(zip(self.input_names, self.example_inputs))]
        out = []
        for inputs in Batches(self.train_data, self.input_names, limit=self.calib_batches):
            out.append([inputs[n] for n in self.input_names] if len(self.input_names) > 1 else inputs[self.input_names[0]])
        return out

    def _check_out_dir(self) -> None:
        out = self.out_dir
        if out.exists() and not out.is_dir():
            raise OutputExistsError(f"output path {out} exists and is not a directory")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SlimError(f"cannot create output directory {out}: {exc.strerror or exc}") from exc
        probe = out / ".slim-write-probe"
        try:
            with open(probe, "wb") as fh:
                fh.write(b"0" * 4096)
                fh.flush()
                os.fsync(fh.fileno())
            probe.unlink()
        except OSError as exc:
            raise SlimError(f"output directory {out} is not writable: {exc.strerror or exc}") from exc
        need = self._param_bytes() * _MIN_FREE_FACTOR + 1024 * 1024
        free = shutil.disk_usage(out).free
        if free < need:
            raise SlimError(f"not enough free disk space in {out}: {free:,} bytes free, about {need:,} needed for checkpoints and outputs")
        state = out / _CKPT / _STATE
        finished = (out / "metrics.json").exists() and not state.exists()
        if state.exists() and not self.resume and not self.overwrite:
            raise OutputExistsError(
                f"{out} holds checkpoints of an earlier run; pass resume=True to continue it or overwrite=True to start over"
            )
        if finished and not self.overwrite:
            raise OutputExistsError(f"{out} holds the results of a finished run; pass overwrite=True or choose another out_dir")

    def _param_bytes(self) -> int:
        if self.model_layer is not None:
            return int(sum(int(np.prod(p.shape)) * 4 for p in self.model_layer.parameters()))
        assert self.model_path is not None
        return int(Path(str(self.model_path) + ".pdiparams").stat().st_size)

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update((self.recipe.fingerprint() if self.recipe is not None else "auto").encode())
        h.update(json.dumps(self.target.to_dict(), sort_keys=True).encode())
        h.update(json.dumps([list(a.shape) for a in self.example_inputs]).encode())
        if self.model_layer is not None:
            for name, value in sorted(self.model_layer.state_dict().items()):
                h.update(name.encode())
                h.update(np.ascontiguousarray(value.numpy()).tobytes())
        else:
            h.update("".join(sorted(self._source_files.values())).encode())
        return h.hexdigest()[:24]

    # ------------------------------------------------------------------ state
    @property
    def _ckpt_dir(self) -> Path:
        return self.out_dir / _CKPT

    def _save_state(self) -> None:
        data = {
            "version": 1,
            "fingerprint": self._fp,
            "plans": [p.to_dict() for p in self._plans],
            "candidates": [c.to_dict() for c in self._candidates],
        }
        with atomic_write(self._ckpt_dir / _STATE) as fh:
            json.dump(data, fh, indent=1, default=str)

    def _load_state(self) -> bool:
        path = self._ckpt_dir / _STATE
        if not (self.resume and path.exists()):
            return False
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SlimError(f"cannot read the checkpoint state {path}: {exc}; pass overwrite=True and resume=False to start over") from exc
        if data.get("fingerprint") != self._fp:
            if not self.overwrite:
                raise OutputExistsError(
                    f"{self.out_dir} holds checkpoints of a different run (other model, recipe or target); "
                    "pass overwrite=True to start over or choose another out_dir"
                )
            return False
        self._plans = [_Plan.from_dict(p) for p in data["plans"]]
        self._candidates = [Candidate.from_dict(c) for c in data["candidates"]]
        return True

    # ------------------------------------------------------------------ the run
    def compress(self) -> CompressionResult:
        """Run the recipe or the strategy; always delivers the best model found.

        Returns:
            :class:`CompressionResult`; the model, ``metrics.json``, ``report.md`` and
            ``report.html`` are in ``out_dir``.
        """
        paddle = require_paddle()
        t0 = time.monotonic()
        self._deadline = None if self.max_time is None else t0 + self.max_time
        self._fp = self._fingerprint()
        self._plans: list[_Plan] = []
        self._candidates: list[Candidate] = []
        resumed = self._load_state()
        if not resumed:
            if self._ckpt_dir.exists():
                shutil.rmtree(self._ckpt_dir)
            self._ckpt_dir.mkdir(parents=True)
        teacher = None
        if self.model_layer is not None:
            teacher = copy.deepcopy(self.model_layer)
            teacher.eval()
            for p in teacher.parameters():
                p.stop_gradient = True
        self._teacher = teacher
        # baseline ------------------------------------------------------------------------
        if not self._candidates:
            self._baseline_candidate()
        baseline = self._candidates[0]
        self._best = select_best(self._candidates, baseline, self.target)
        self._deliver()
        stopped = "done"
        strategy = None
        if self.recipe is None or not self.recipe.stages:
            from slim_auto.strategy import AutoStrategy

            strategy = AutoStrategy(self)
        elif not self._plans:
            self._plans.append(_Plan("recipe", self.recipe))
            self._save_state()
        i = 0
        while True:
            if self._time_up():
                stopped = "time"
                break
            if self._best.id != baseline.id and meets_target(self._best, baseline, self.target) and strategy is not None:
                stopped = "target"
                break
            if i >= len(self._plans):
                if strategy is None:
                    break
                nxt = strategy.next_plan(self._plans, self._candidates, baseline)
                if nxt is None:
                    break
                self._plans.append(_Plan(nxt[0], nxt[1]))
                self._save_state()
            plan = self._plans[i]
            if plan.status in ("pending", "running", "time"):  # "time": cut short by an earlier run's budget
                paddle.disable_static()
                self._run_plan(i, plan)
                if plan.status == "time":
                    stopped = "time"
                    break
            i += 1

        return self._finish(stopped, time.monotonic() - t0)

    def _time_up(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

    def _context(self, train: TrainConfig, work: Path) -> StageContext:
        baseline = self._candidates[0]

        def reached(metric: float) -> bool:
            c = Candidate(id=-1, name="probe", metric=metric)
            return metric_ok(c, baseline, self.target)

        has_metric_target = self.target.max_metric_drop is not None or self.target.min_metric is not None
        return StageContext(
            teacher=self._teacher,
            train_data=self.train_data,
            calib_data=self.calib_data,
            eval_fn=self.eval_fn,
            example_inputs=self.example_inputs,
            input_spec=self.input_spec,
            input_names=self.input_names,
            train=train,
            reached=reached if has_metric_target and self.target.min_speedup is None else None,
            deadline=self._deadline,
            work_dir=work,
            max_metric_drop=self.target.max_metric_drop,
        )

    def _fresh_state(self) -> ModelState:
        if self.model_layer is not None:
            layer = copy.deepcopy(self.model_layer)
            layer.eval()
            return ModelState(layer=layer)
        return ModelState(path=self.model_path)

    def _measure(self, state: ModelState, model_dir: Path) -> Measurement:
        if model_dir.exists():
            shutil.rmtree(model_dir)
        return measure_candidate(
            state,
            model_dir,
            eval_fn=self.eval_fn,
            example_inputs=self.example_inputs,
            input_spec=self.input_spec,
            backends=self.backends,
            batch_sizes=self.batch_sizes,
            threads=self.threads,
        )

    def _baseline_candidate(self) -> None:
        rel = f"{_CKPT}/cand-000-baseline"
        try:
            m = self._measure(self._fresh_state(), self.out_dir / rel)
        except SlimError:
            raise
        except Exception as exc:
            raise CompressionRunError(f"the original model could not be evaluated: {type(exc).__name__}: {exc}") from exc
        c = Candidate(id=0, name="baseline", model_dir=rel, seconds=m.eval_seconds)
        _fill(c, m)
        self._candidates.append(c)
        self._save_state()

    def _ckpt_path(self, plan: int, stage: int) -> Path:
        return self._ckpt_dir / f"p{plan}-s{stage}.pdparams"

    def _save_weights(self, state: ModelState, plan: int, stage: int) -> None:
        if state.layer is None:
            return  # inference-model stages: the exported candidate is the checkpoint
        paddle = require_paddle()
        buf = io.BytesIO()
        paddle.save(state.layer.state_dict(), buf)
        with atomic_write(self._ckpt_path(plan, stage), "wb") as fh:
            fh.write(buf.getvalue())

    def _load_weights(self, state: ModelState, plan: int, stage: int) -> None:
        if state.layer is None:
            return
        paddle = require_paddle()
        path = self._ckpt_path(plan, stage)
        if not path.exists():
            raise SlimError(f"checkpoint {path} is missing; pass overwrite=True and resume=False to start over")
        sd = paddle.load(str(path))
        missing, unexpected = state.layer.set_state_dict(sd)
        if missing or unexpected:
            raise SlimError(
                f"checkpoint {path} does not match the rebuilt model (missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
            )

    def _replay(self, pi: int, plan: _Plan, state: ModelState) -> ModelState:
        """Rebuild the model after ``plan.done`` finished stages (resume)."""
        for si in range(plan.done):
            spec = plan.recipe.stages[si]
            stage = get_stage(spec.kind)
            if state.layer is None:
                cand = next(c for c in self._candidates if c.plan == pi and c.stage == si and c.status == "ok")
                state.path = self.out_dir / cand.model_dir
                state.quantized = stage.kind in ("ptq", "qat", "weight_only")
                continue
            if si > 0:
                self._load_weights(state, pi, si - 1)
            ctx = self._context(plan.recipe.train_for(spec), self._ckpt_dir / f"work-p{pi}-s{si}")
            ctx.record = dict(plan.records[si]) if si < len(plan.records) else {}
            self._seed(pi, si, ctx.train)
            state = stage.rebuild(state, stage.make_config(plan.chosen[si]), ctx)
        self._load_weights(state, pi, plan.done - 1)
        return state

    def _seed(self, pi: int, si: int, train: TrainConfig) -> None:
        paddle = require_paddle()
        paddle.seed(train.seed + 1000 * pi + si)
        np.random.seed((train.seed + 1000 * pi + si) % 2**32)

    def _run_plan(self, pi: int, plan: _Plan) -> None:
        state = self._fresh_state()
        if plan.done:
            state = self._replay(pi, plan, state)
        plan.status = "running"
        self._save_state()
        baseline = self._candidates[0]
        for si in range(plan.done, len(plan.recipe.stages)):
            if self._time_up():
                plan.status = "time"
                self._save_state()
                return
            spec = plan.recipe.stages[si]
            stage = get_stage(spec.kind)
            train = plan.recipe.train_for(spec)
            work = self._ckpt_dir / f"work-p{pi}-s{si}"
            ctx = self._context(train, work)
            ctx.max_trials = spec.max_trials
            names = [s.label for s in plan.recipe.stages[: si + 1]]
            cid = len(self._candidates)
            rel = f"{_CKPT}/cand-{cid:03d}"
            cand = Candidate(id=cid, name=" > ".join(names), plan=pi, stage=si)
            cand.train = train.to_dict() if stage.trains else {}
            t0 = time.monotonic()
            n_applied = len(state.applied)
            try:
                self._seed(pi, si, train)
                if spec.search:
                    state, settings, trials = self._search(state, spec, stage, ctx)
                    cand.trials = trials
                else:
                    settings = dict(spec.settings)
                    state = stage.run(state, stage.make_config(settings), ctx)
                cand.settings = settings
                for entry in state.applied[n_applied:]:
                    if entry.get("stage") == "ptq-skipped-layers":
                        cand.notes.append(f"kept in float by sensitivity: {entry['layers']}; metrics {entry.get('metrics')}")
                if ctx.outcome is not None:
                    cand.notes.append(f"trained {ctx.outcome.steps} steps (stopped: {ctx.outcome.stopped})")
                    if ctx.outcome.stopped == "time":
                        cand.status = "time"
                m = self._measure(state, self.out_dir / rel)
                _fill(cand, m)
                cand.model_dir = rel
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # a failing stage or eval_fn ends this plan; earlier results stay
                cand.status = "failed"
                cand.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
                cand.seconds = time.monotonic() - t0
                self._candidates.append(cand)
                plan.status = "failed"
                self._save_state()
                return
            cand.seconds = time.monotonic() - t0
            if cand.status == "time":  # a stage cut short by the budget still gives a measured model
                cand.status = "ok"
                cand.notes.append("cut short by max_time")
                self._candidates.append(cand)
                self._update_best(baseline)
                plan.status = "time"
                self._save_state()
                return
            self._save_weights(state, pi, si)
            plan.done = si + 1
            plan.chosen.append(settings)
            plan.records.append(json.loads(json.dumps(ctx.record, default=str)))
            self._candidates.append(cand)
            self._update_best(baseline)
            self._save_state()
            shutil.rmtree(work, ignore_errors=True)
        plan.status = "done"
        self._save_state()

    def _search(
        self, state: ModelState, spec: StageSpec, stage: Any, ctx: StageContext
    ) -> tuple[ModelState, dict[str, Any], list[dict[str, Any]]]:
        """Try settings of the stage's search space on copies of ``state``; keep the best by metric."""
        from slim_auto.search import search_settings

        return search_settings(self, state, spec, stage, ctx)

    def _update_best(self, baseline: Candidate) -> None:
        best = select_best(self._candidates, baseline, self.target)
        if best.id != self._best.id:
            self._best = best
            self._deliver()

    def _deliver(self) -> None:
        """Copy the best candidate's exported model to ``out_dir/model`` and refresh the report."""
        src = self.out_dir / self._best.model_dir
        with atomic_dir(self.out_dir / "model", overwrite=True) as tmp:
            for f in src.iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        self._write_report("running", 0.0)

    def _summary(self, stopped: str, seconds: float) -> RunSummary:
        return RunSummary(
            baseline=self._candidates[0],
            best=self._best,
            candidates=list(self._candidates),
            target=self.target,
            stopped=stopped,
            seconds=seconds,
            model_path=str(self.out_dir / "model"),
            title=self.title,
            translation=self.translation,
        )

    def _write_report(self, stopped: str, seconds: float) -> RunSummary:
        s = self._summary(stopped, seconds)
        write_report(s, self.out_dir)
        return s

    def _remeasure_final(self) -> None:
        """Time the original, the delivered model and the other Pareto candidates again, alternating,
        so the final choice and the before/after latencies come from the same machine load
        (fastest of two rounds each); the best is chosen again on these numbers."""
        baseline = self._candidates[0]
        if len([c for c in self._candidates if c.status == "ok"]) < 2:
            return
        front = pareto_front(self._candidates, self.target)
        chosen = {baseline.id: baseline, self._best.id: self._best}
        for c in front:
            if len(chosen) >= 6:
                break
            chosen.setdefault(c.id, c)
        rounds: dict[int, list[dict[str, dict[str, float]]]] = {cid: [] for cid in chosen}
        for _ in range(2):
            for cid, c in chosen.items():
                m = Measurement()
                measure_latency(self.out_dir / c.model_dir, self.example_inputs, self.backends, self.batch_sizes, self.threads, m)
                rounds[cid].append(m.latency_ms)
        for cid, c in chosen.items():
            merged: dict[str, dict[str, float]] = {}
            for lat in rounds[cid]:
                for backend, per_batch in lat.items():
                    for batch, ms in per_batch.items():
                        old = merged.setdefault(backend, {}).get(batch)
                        merged[backend][batch] = ms if old is None else min(old, ms)
            if merged:
                c.notes.append(f"latency during the search: {c.latency_ms}; re-measured at the end next to the other finalists")
                c.latency_ms = merged
        best = select_best(self._candidates, baseline, self.target)
        if best.id != self._best.id:
            self._best = best
            self._deliver()
        self._save_state()

    def _finish(self, stopped: str, seconds: float) -> CompressionResult:
        self._remeasure_final()
        baseline = self._candidates[0]
        if stopped == "target" and not (self._best.id != baseline.id and meets_target(self._best, baseline, self.target)):
            stopped = "done"  # the final timing showed the candidate that stopped the run is not faster after all
        summary = self._write_report(stopped, seconds)
        self._check_inputs_unchanged()
        for p in self._ckpt_dir.glob("work-*"):
            shutil.rmtree(p, ignore_errors=True)
        baseline = self._candidates[0]
        return CompressionResult(
            best=self._best,
            baseline=baseline,
            candidates=list(self._candidates),
            target=self.target,
            target_met=summary.target_met,
            stopped=stopped,
            out_dir=self.out_dir,
            model_path=self.out_dir / "model",
            seconds=seconds,
            translation=self.translation,
            summary=summary,
        )

    def _check_inputs_unchanged(self) -> None:
        for path, digest in self._source_files.items():
            if _sha(Path(path)) != digest:  # pragma: no cover - would be a bug in a stage
                raise SlimError(f"input model file {path} changed during the run")

    # ------------------------------------------------------------------ helpers for strategies
    def predict_original(self) -> Callable[..., np.ndarray]:
        """A numpy predict function of the original model's export."""
        return predictor_for(self.out_dir / self._candidates[0].model_dir, self.backends[0], self.threads)

    def export(self, state: ModelState, model_dir: Path) -> Path:
        """Export ``state`` into ``model_dir`` the way candidates are exported."""
        return export_state(state, model_dir, self.input_spec, threads=self.threads)


def _fill(c: Candidate, m: Measurement) -> None:
    c.metric, c.flops, c.params, c.size_bytes = m.metric, m.flops, m.params, m.size_bytes
    c.latency_ms = m.latency_ms
    c.notes.extend(m.notes)


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _feed_shapes(loaded: Any) -> list[list[int]]:
    shapes = []
    if loaded.format == "pir":
        for op in loaded.program.global_block().ops:
            if op.name() in ("pd_op.data", "pd_op.feed"):
                shapes.append(list(op.result(0).shape))
    else:
        block = loaded.program.global_block()
        shapes = [list(block.var(n).shape) for n in loaded.input_names]
    if not shapes:
        raise ModelLoadError("could not read the input shapes of the inference model; pass example_inputs")
    return shapes
