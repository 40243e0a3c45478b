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
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slim_auto.act import ActTranslation, load_any_recipe
from slim_auto.candidates import Candidate, meets_target, metric_ok, speedup, unmet_reasons
from slim_auto.measure import Measurement, evaluate, export_formats, export_state, measure_candidate, time_side_by_side
from slim_auto.plans import Plan, PlanRunner, error_line
from slim_auto.recipe import Recipe, TargetConfig, TrainConfig
from slim_auto.report import RunSummary, before_after_markdown, speed_text, write_report
from slim_auto.routes import ROUTES, routes_for
from slim_auto.runstore import RunStore
from slim_auto.selection import Selection
from slim_auto.stages import ModelState, StageContext, check_recipe
from slim_core import (
    Batches,
    ConfigError,
    DataError,
    ModelLoadError,
    SlimError,
    load_inference_model,
    require_paddle,
    to_numpy,
)
from slim_core.log import get_logger
from slim_core.model_io import resolve_model_path

__all__ = ["AutoCompression", "CompressionResult", "CompressionRunError", "accuracy_eval"]

log = get_logger(__name__)
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
        stopped: ``"target"``, ``"time"`` or ``"done"`` (every plan ran). The report of a run
            still going says ``"running"``, of an interrupted one ``"interrupted"``.
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

    @property
    def failures(self) -> list[Candidate]:
        """The candidates that failed (each with its one-line error)."""
        return [c for c in self.candidates if c.status == "failed"]

    @property
    def missed(self) -> list[tuple[Candidate, list[str]]]:
        """The measured candidates (not the original) that miss the target, each with why (e.g. one runtime's INT8 reads worse)."""
        if not self.target.is_set:
            return []
        out = []
        for c in self.candidates:
            if c.status == "ok" and c.id != self.baseline.id:
                why = unmet_reasons(c, self.baseline, self.target)
                if why:
                    out.append((c, why))
        return out

    def to_markdown(self) -> str:
        """The before/after table (as printed by ``slim compress`` and ``slim demo``)."""
        assert self.summary is not None
        if not self.target.is_set:
            head = "target: none set -> the fastest candidate is delivered\n"
        else:
            head = (
                f"target: {self.target.describe()} -> {'met' if self.target_met else 'NOT met (' + '; '.join(self.unmet_reasons) + ')'}\n"
            )
        return head + f"best: #{self.best.id} {self.best.name}\n\n" + before_after_markdown(self.summary)


def _as_list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


class AutoCompression:
    """Compress a model to a target with a recipe (or a strategy chosen from the model and target).

    The engine normalises the inputs and drives the run; the pieces it uses have one job each:
    :class:`~slim_auto.runstore.RunStore` (the output directory: ownership, lock, checkpoints),
    :class:`~slim_auto.plans.PlanRunner` (stages of a plan into measured candidates),
    :class:`~slim_auto.selection.Selection` (the delivered best), and the report.

    Args:
        model: a dygraph ``paddle.nn.Layer`` (never modified: the run works on a copy), or the
            path of an inference model (PIR ``.json`` or legacy ``.pdmodel``; only read).
        train_data: batches for calibration and fine-tuning: a DataLoader, a list of
            ``(x, label)`` / ``x`` / dicts. Labels are optional (distillation needs none).
        eval_fn: ``eval_fn(predict) -> float`` where ``predict(*numpy_arrays) -> numpy`` runs a
            model; it is called with the exported model on its runtime for every candidate.
            Higher is better unless ``target.higher_is_better`` is False.
        config: a recipe (YAML path, YAML text, dict or :class:`Recipe`), a PaddleSlim ACT
            recipe (translated), or None to let slim choose the strategy.
        target: :class:`TargetConfig` or its dict; overrides the recipe's ``target``.
        example_inputs: one array (or a list, one per input) of model inputs; the batch
            dimension is kept dynamic in exports. Taken from ``train_data`` when omitted.
        input_spec: Paddle ``InputSpec`` list instead of ``example_inputs``.
        out_dir: output directory (model, metrics.json, report.md, report.html, checkpoints).
            Relative paths are taken from the current directory at construction. It must be new,
            empty or an earlier slim run's (slim writes a ``.slim-auto.json`` marker), unless ``overwrite``.
        max_time: time budget in seconds; the best result so far is delivered when it runs out.
        backends: runtimes allowed (``"paddle"``: Paddle Inference with oneDNN, ``"onnxruntime"``, ``"openvino"``;
            see :data:`slim_auto.routes.ROUTES`). Default: ``("paddle",)`` for a Layer, every
            installed runtime for an inference model (its PTQ is tried on each, a failing runtime
            is a failed candidate). The original model is timed on each; speedups compare the
            fastest runtime of each model.
        batch_sizes: batch sizes to time; the first gives the speedup.
        threads: CPU threads for inference.
        calib_batches: batches of ``train_data`` used for calibration.
        resume: continue from the checkpoints in ``out_dir`` when they match this run (same
            model, recipe, target and input shapes); False starts over (needs ``overwrite``
            when checkpoints exist).
        overwrite: allow writing into a non-empty directory slim did not create, and replacing
            what an earlier run left there.
        title: heading of the report.

    Raises:
        ConfigError: malformed recipe (line and key), unavailable stage, bad target, unknown runtime.
        ModelLoadError: the model path does not hold a model.
        OutputExistsError / SlimError: ``out_dir`` not slim's, busy with another run, not writable
            or its disk too full, before any work.
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
        backends: Iterable[str] | None = None,
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
        self.batch_sizes = [int(b) for b in batch_sizes]
        self.threads = int(threads)
        self.title = title
        out = Path(os.path.abspath(os.fspath(out_dir)))  # relative paths behave as absolute ones, whatever links libraries make
        rank = int(os.environ.get("PADDLE_TRAINER_ID", "0") or 0)
        if rank > 0:  # under paddle.distributed.launch only rank 0 writes out_dir itself
            out = out / f"rank-{rank}"
        self.store = RunStore(out, resume=resume, overwrite=overwrite)
        self.out_dir = self.store.out_dir
        # --- the model (never modified) --------------------------------------------------
        self._source_files: dict[str, str] = {}
        if isinstance(model, (str, os.PathLike)):
            prefix, _ = resolve_model_path(os.path.abspath(os.fspath(model)))
            loaded = load_inference_model(prefix)  # proves it loads; raises ModelLoadError otherwise
            self.model_path: Path | None = prefix
            self.model_layer = None
            self.model_format = loaded.format
            self.input_names = list(loaded.input_names)
            self._source_files = {str(p): _sha(p) for p in prefix.parent.iterdir() if p.name.startswith(prefix.name + ".")}
        elif isinstance(model, paddle.nn.Layer):
            self.model_path = None
            self.model_format = "layer"
            try:
                self.model_layer = copy.deepcopy(model)
            except Exception as exc:
                raise ModelLoadError(f"could not copy the model (the run never modifies yours): {exc}") from exc
            self.model_layer.eval()
            self.input_names = None  # type: ignore[assignment]
        else:
            raise ModelLoadError(f"model must be a paddle.nn.Layer or an inference model path, got {type(model).__name__}")
        if backends is None:
            backends = ["paddle"] if self.model_layer is not None else [r.name for r in routes_for(list(ROUTES))]
        self.backends = list(backends)
        if not self.backends or not self.batch_sizes:
            raise ConfigError("backends and batch_sizes need at least one entry each")
        routes_for(self.backends)  # unknown runtime names fail here, before any work
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
        self.store.check(self._param_bytes() * _MIN_FREE_FACTOR + 1024 * 1024)
        self.candidates: list[Candidate] = []
        self.plans: list[Plan] = []
        self._deadline: float | None = None
        self._fp = ""

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

    def _param_bytes(self) -> int:
        if self.model_layer is not None:
            return int(sum(int(np.prod(p.shape)) * 4 for p in self.model_layer.parameters()))
        assert self.model_path is not None
        params = Path(str(self.model_path) + ".pdiparams")
        return int(params.stat().st_size) if params.exists() else 0

    def _fingerprint(self) -> str:
        h = hashlib.sha256(b"slim-auto state v2")
        h.update((self.recipe.fingerprint() if self.recipe is not None else "auto").encode())
        h.update(json.dumps(self.target.to_dict(), sort_keys=True).encode())
        h.update(json.dumps([list(a.shape) for a in self.example_inputs]).encode())
        h.update(json.dumps(self.backends).encode())
        if self.model_layer is not None:
            for name, value in sorted(self.model_layer.state_dict().items()):
                h.update(name.encode())
                h.update(np.ascontiguousarray(value.numpy()).tobytes())
        else:
            h.update("".join(sorted(self._source_files.values())).encode())
        return h.hexdigest()[:24]

    # ------------------------------------------------------------------ services for the plan runner
    def save(self) -> None:
        """Checkpoint the plans and candidates."""
        self.store.save(self._fp, [p.to_dict() for p in self.plans], [c.to_dict() for c in self.candidates])

    def time_up(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

    def context(self, train: TrainConfig, work: Path) -> StageContext:
        """Everything a stage gets from the engine: data, eval function, target, deadline, scratch directory."""
        baseline = self.candidates[0]

        def reached(metric: float) -> bool:
            return metric_ok(Candidate(id=-1, name="probe", metric=metric), baseline, self.target)

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
            higher_is_better=self.target.higher_is_better,
            threads=self.threads,
        )

    def fresh_state(self) -> ModelState:
        """A new copy of the original model."""
        if self.model_layer is not None:
            layer = copy.deepcopy(self.model_layer)
            layer.eval()
            return ModelState(layer=layer)
        return ModelState(path=self.model_path)

    def measure(self, state: ModelState, rel: str, metric: float | None = None) -> Measurement:
        """Export ``state`` into the candidate directory ``rel`` and measure it there."""
        import shutil

        model_dir = self.out_dir / rel
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
            metric=metric,
        )

    def export_and_evaluate(self, state: ModelState, model_dir: Path) -> float:
        """Export a search trial into its own directory and evaluate it there (on its runtime)."""
        backends = [state.runtime] if state.runtime else self.backends
        export_state(state, model_dir, self.input_spec, threads=self.threads, formats=export_formats(backends))
        return evaluate(model_dir, self.eval_fn, backends[0], self.threads)

    def fill(self, c: Candidate, m: Measurement) -> None:
        """Copy a measurement into a candidate."""
        c.metric, c.flops, c.params, c.size_bytes = m.metric, m.flops, m.params, m.size_bytes
        c.latency_ms = m.latency_ms
        c.notes.extend(m.notes)

    def describe(self, c: Candidate) -> str:
        """One line: metric, drop, speedup."""
        base = self.candidates[0]
        parts = [f"metric {c.metric:.4f}" if c.metric is not None else "metric n/a"]
        if c.metric is not None and base.metric is not None and c.id != base.id:
            parts.append(f"drop {base.metric - c.metric:+.4f}")
        sp = speedup(c, base)
        if sp is not None and c.id != base.id:
            parts.append(speed_text(sp))
        if c.id != base.id and self.target.is_set and c.status == "ok":
            why = unmet_reasons(c, base, self.target)
            if why:  # a worse candidate: say why it cannot be delivered (e.g. one runtime's INT8 loses accuracy)
                parts.append("misses the target: " + "; ".join(why))
        return ", ".join(parts)

    def update_best(self) -> None:
        self._selection.update(self.candidates)

    # ------------------------------------------------------------------ the run
    def compress(self) -> CompressionResult:
        """Run the recipe or the strategy; always delivers the best model found.

        Returns:
            :class:`CompressionResult`; the model, ``metrics.json``, ``report.md`` and
            ``report.html`` are in ``out_dir``.

        Raises:
            OutputExistsError: another run holds ``out_dir``.
            CompressionRunError: the original model cannot be evaluated.
            KeyboardInterrupt: passed on after the report is marked ``interrupted`` (the best model so
                far stays in ``out_dir/model``, the checkpoints stay: running again resumes).
        """
        t0 = time.monotonic()
        self._deadline = None if self.max_time is None else t0 + self.max_time
        self._fp = self._fingerprint()
        data = self.store.open(self._fp)
        try:
            self.plans = [Plan.from_dict(p) for p in data["plans"]] if data else []
            self.candidates = [Candidate.from_dict(c) for c in data["candidates"]] if data else []
            if data:
                self._drop_unfinished_stage()
                log.info("resuming the run in %s (%d candidates measured)", self.out_dir, len(self.candidates))
            return self._run(t0)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM under the `slim` command: say so where the report said "running"
            if getattr(self, "_selection", None) is not None and self._selection.best is not None:
                self._write_report("interrupted", time.monotonic() - t0)
            raise
        finally:
            self.store.unlock()

    def _drop_unfinished_stage(self) -> None:
        """Forget the candidates of the stage a killed run was in the middle of.

        That stage reruns from its start on resume (its weights were never checkpointed);
        keeping the candidates it had already measured would list them twice, unlike an
        uninterrupted run. They are the last ones measured, so the ids of the rest are unchanged.
        """
        done = {pi: p.done for pi, p in enumerate(self.plans) if p.status == "running"}
        keep = len(self.candidates)
        while (
            keep > 1 and self.candidates[keep - 1].plan in done and self.candidates[keep - 1].stage >= done[self.candidates[keep - 1].plan]
        ):
            keep -= 1
        if keep < len(self.candidates):
            log.info("the interrupted stage reruns: %d of its candidates are measured again", len(self.candidates) - keep)
            del self.candidates[keep:]

    def _run(self, t0: float) -> CompressionResult:
        paddle = require_paddle()
        teacher = None
        if self.model_layer is not None:
            teacher = copy.deepcopy(self.model_layer)
            teacher.eval()
            for p in teacher.parameters():
                p.stop_gradient = True
        self._teacher = teacher
        self._selection = Selection(self.store, self.target, on_change=lambda: self._write_report("running", 0.0))
        if not self.candidates:
            self._baseline_candidate()
        baseline = self.candidates[0]
        self._selection.update(self.candidates, force=True)
        runner = PlanRunner(self)
        stopped = "done"
        strategy = None
        if self.recipe is None or not self.recipe.stages:
            from slim_auto.strategy import AutoStrategy

            strategy = AutoStrategy(self)
        elif not self.plans:
            self.plans.append(Plan("recipe", self.recipe))
            self.save()
        i = 0
        while True:
            best = self._selection.best
            assert best is not None
            if self.time_up():
                stopped = "time"
                log.info("time budget used up")
                break
            if best.id != baseline.id and meets_target(best, baseline, self.target) and strategy is not None:
                stopped = "target"
                break
            if i >= len(self.plans):
                if strategy is None:
                    break
                nxt = strategy.next_plan(self.plans, self.candidates, baseline)
                if nxt is None:
                    break
                self.plans.append(Plan(nxt[0], nxt[1]))
                self.save()
            plan = self.plans[i]
            if plan.status in ("pending", "running", "time"):  # "time": cut short by an earlier run's budget
                paddle.disable_static()
                log.info("plan %s: %s", plan.name, " > ".join(s.label for s in plan.recipe.stages))
                runner.run(i, plan)
                if plan.status == "time":
                    stopped = "time"
                    break
            i += 1
        return self._finish(stopped, time.monotonic() - t0)

    def _baseline_candidate(self) -> None:
        rel = self.store.candidate_rel(0, "baseline")
        log.info("measuring the original model")
        try:
            m = self.measure(self.fresh_state(), rel)
        except SlimError:
            raise
        except Exception as exc:
            raise CompressionRunError(f"the original model could not be evaluated: {error_line(exc)}") from exc
        c = Candidate(id=0, name="baseline", model_dir=rel, seconds=m.eval_seconds)
        self.fill(c, m)
        self.candidates.append(c)
        log.info("original model: %s", self.describe(c))
        self.save()

    def _summary(self, stopped: str, seconds: float) -> RunSummary:
        assert self._selection.best is not None
        return RunSummary(
            baseline=self.candidates[0],
            best=self._selection.best,
            candidates=list(self.candidates),
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

    def _time(self, cands: list[Candidate]) -> dict[int, dict[str, dict[str, float]]]:
        models = {c.id: (self.out_dir / c.model_dir, [c.runtime] if c.runtime else list(self.backends)) for c in cands}
        return time_side_by_side(models, self.example_inputs, self.batch_sizes, self.threads)

    def _finish(self, stopped: str, seconds: float) -> CompressionResult:
        best = self._selection.remeasure(self.candidates, self._time)
        self.save()
        baseline = self.candidates[0]
        if stopped == "target" and not (best.id != baseline.id and meets_target(best, baseline, self.target)):
            stopped = "done"  # the final timing showed the candidate that stopped the run is not faster after all
        summary = self._write_report(stopped, seconds)
        self._check_inputs_unchanged()
        self.store.clean_work()
        verdict = "met" if summary.target_met else ("not set" if not self.target.is_set else "NOT met")
        log.info("target %s: delivered #%d %s (%s) in %s", verdict, best.id, best.name, self.describe(best), self.out_dir / "model")
        return CompressionResult(
            best=best,
            baseline=baseline,
            candidates=list(self.candidates),
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
