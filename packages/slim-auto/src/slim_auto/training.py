"""Fine-tuning with distillation from the original model, used by the training stages.

The loss is slim-distill's :class:`~slim_distill.Distiller` loss (soft-label KL on
the logits unless the recipe says otherwise), plus cross-entropy on the labels
when ``TrainConfig.label_loss_weight`` is set and the data carries labels. No
labels are needed otherwise, as in PaddleSlim ACT. Under
``python -m paddle.distributed.launch`` the student is wrapped in
``paddle.DataParallel`` and each rank reads its share of the batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slim_auto.recipe import TrainConfig
from slim_core import Batches, DataError, progress, require_paddle

__all__ = ["TrainOutcome", "finetune", "make_optimizer", "layer_predict", "DEFAULT_DISTILL"]

#: the distillation loss when a recipe names none: soft-label KL on the logits, temperature 4
DEFAULT_DISTILL: dict[str, Any] = {"logits": {"loss": "kl", "temperature": 4.0}}


@dataclass
class TrainOutcome:
    """What a fine-tuning run did.

    Attributes:
        steps: optimizer steps taken.
        stopped: ``"done"``, ``"target"`` (the metric target was met at an evaluation) or ``"time"``.
        evals: ``(step, metric)`` of the periodic evaluations.
        losses: mean loss per 10% of the run (for the report).
    """

    steps: int = 0
    stopped: str = "done"
    evals: list[tuple[int, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def layer_predict(layer: Any) -> Callable[..., np.ndarray]:
    """A numpy-in, numpy-out callable running ``layer`` in eval mode without gradients."""
    paddle = require_paddle()

    def predict(*arrays: np.ndarray) -> np.ndarray:
        was = layer.training
        layer.eval()
        try:
            with paddle.no_grad():
                out = layer(*[paddle.to_tensor(np.asarray(a)) for a in arrays])
        finally:
            if was:
                layer.train()
        if isinstance(out, (list, tuple)):
            return [np.asarray(o.numpy()) for o in out]  # type: ignore[return-value]
        return np.asarray(out.numpy())

    return predict


def _schedule(cfg: TrainConfig, total: int) -> Any:
    paddle = require_paddle()
    lr: Any = cfg.learning_rate
    decay_steps = max(total - cfg.warmup_steps, 1)
    if cfg.lr_schedule == "cosine":
        lr = paddle.optimizer.lr.CosineAnnealingDecay(cfg.learning_rate, T_max=decay_steps)
    elif cfg.lr_schedule == "step":
        lr = paddle.optimizer.lr.PiecewiseDecay(
            [max(decay_steps // 2, 1), max(3 * decay_steps // 4, 2)], [cfg.learning_rate, cfg.learning_rate * 0.1, cfg.learning_rate * 0.01]
        )
    if cfg.warmup_steps:
        lr = paddle.optimizer.lr.LinearWarmup(lr, cfg.warmup_steps, 0.0, cfg.learning_rate)
    return lr


def make_optimizer(cfg: TrainConfig, parameters: list[Any], total_steps: int) -> tuple[Any, Any]:
    """``(optimizer, lr_scheduler or None)`` for ``cfg``."""
    paddle = require_paddle()
    lr = _schedule(cfg, total_steps)
    wd = cfg.weight_decay or None
    opt_cls = {
        "sgd": paddle.optimizer.SGD,
        "momentum": paddle.optimizer.Momentum,
        "adam": paddle.optimizer.Adam,
        "adamw": paddle.optimizer.AdamW,
    }[cfg.optimizer]
    kwargs: dict[str, Any] = {"learning_rate": lr, "parameters": parameters}
    if wd is not None:
        kwargs["weight_decay"] = wd
    opt = opt_cls(**kwargs)
    return opt, (lr if not isinstance(lr, float) else None)


def _world() -> tuple[int, int]:
    paddle = require_paddle()
    try:
        return int(paddle.distributed.get_rank()), int(paddle.distributed.get_world_size())
    except Exception:  # not launched distributed
        return 0, 1


def finetune(
    student: Any,
    teacher: Any | None,
    train_data: Any,
    cfg: TrainConfig,
    *,
    distill: dict[str, Any] | None = None,
    eval_fn: Callable[[Callable[..., np.ndarray]], float] | None = None,
    reached: Callable[[float], bool] | None = None,
    deadline: float | None = None,
    input_names: list[str] | None = None,
    desc: str = "fine-tune",
    optimizer_hook: Callable[[Any], Any] | None = None,
) -> TrainOutcome:
    """Train ``student`` in place with the distillation loss from ``teacher``.

    Args:
        student: the dygraph Layer being compressed (trained in place).
        teacher: the original model, frozen; None trains on labels only.
        train_data: batches ``(x, label)`` / ``x`` / dicts, as :class:`slim_core.Batches` accepts.
        cfg: optimizer, schedule, steps or epochs, evaluation interval, seed.
        distill: ``DistillConfig`` dict (default: soft-label KL on the logits).
        eval_fn: called every ``cfg.eval_interval`` steps with a numpy predict function.
        reached: ``metric -> bool``; training stops early once it returns True.
        deadline: ``time.monotonic()`` value after which training stops.
        optimizer_hook: called with the optimizer before training (sparsity masks attach here).

    Returns:
        :class:`TrainOutcome`.
    """
    paddle = require_paddle()
    rank, world = _world()
    names = input_names or ["x"]
    # materialize once: the same batches every epoch, and a generator can be read only once
    batches = list(Batches(train_data, names).with_rest())
    if not batches:
        raise DataError("train_data yielded no batch")
    if world > 1:
        batches = batches[rank::world] or batches[:1]
    steps_per_epoch = len(batches)
    total = cfg.steps if cfg.steps > 0 else cfg.epochs * steps_per_epoch
    distiller = None
    model = student
    if teacher is not None:
        from slim_distill import DistillConfig, Distiller

        dcfg = DistillConfig.from_dict(distill or DEFAULT_DISTILL)
        first = batches[0][0]
        distiller = Distiller(student, teacher, dcfg, example_inputs=tuple(paddle.to_tensor(first[n]) for n in names))
        model = distiller
    params = list(distiller.parameters() if distiller is not None and hasattr(distiller, "parameters") else student.parameters())
    params = [p for p in params if not p.stop_gradient]
    if not params:
        raise DataError("the model has no trainable parameter to fine-tune")
    opt, sched = make_optimizer(cfg, params, total)
    if optimizer_hook is not None:
        opt = optimizer_hook(opt) or opt
    if world > 1 and not paddle.distributed.is_initialized():
        paddle.distributed.init_parallel_env()
    train_model = paddle.DataParallel(model) if world > 1 else model
    ce = paddle.nn.CrossEntropyLoss()
    rng = np.random.default_rng(cfg.seed)
    out = TrainOutcome()
    student.train()
    chunk = max(total // 10, 1)
    acc_loss, acc_n = 0.0, 0
    order = rng.permutation(steps_per_epoch)
    pos = 0
    bar = progress(range(total), desc=desc, total=total)
    try:
        for step in bar:
            if deadline is not None and time.monotonic() > deadline:
                out.stopped = "time"
                break
            if pos == steps_per_epoch:
                order, pos = rng.permutation(steps_per_epoch), 0
            inputs, rest = batches[int(order[pos])]
            pos += 1
            tensors = [paddle.to_tensor(inputs[n]) for n in names]
            if distiller is not None:
                # the loss is computed inside forward so DataParallel sees the adaptors' parameters used
                logits, loss = train_model(*tensors, with_loss=True)
            else:
                logits, loss = train_model(*tensors), None
            if cfg.label_loss_weight > 0 or loss is None:
                if not rest:
                    raise DataError("training on labels needs (x, label) batches; this data has no labels")
                label_loss = ce(logits if not isinstance(logits, (list, tuple)) else logits[0], paddle.to_tensor(np.asarray(rest[0])))
                w = cfg.label_loss_weight if loss is not None else 1.0
                loss = label_loss * w if loss is None else loss + label_loss * w
            loss.backward()
            opt.step()
            opt.clear_grad()
            if sched is not None:
                sched.step()
            value = float(loss.numpy())
            if not math.isfinite(value):
                raise DataError(f"the fine-tuning loss became {value} at step {step}; lower the learning rate")
            acc_loss, acc_n = acc_loss + value, acc_n + 1
            if acc_n == chunk:
                out.losses.append(acc_loss / acc_n)
                acc_loss, acc_n = 0.0, 0
            out.steps = step + 1
            if eval_fn is not None and cfg.eval_interval and out.steps % cfg.eval_interval == 0 and out.steps < total:
                metric = float(eval_fn(layer_predict(student)))
                out.evals.append((out.steps, metric))
                student.train()
                if reached is not None and reached(metric):
                    out.stopped = "target"
                    break
    finally:
        if distiller is not None:
            distiller.remove_hooks()
        student.eval()
    if acc_n:
        out.losses.append(acc_loss / acc_n)
    return out
