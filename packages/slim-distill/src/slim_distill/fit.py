"""A small training loop for a Distiller or MutualLearner: progress, checkpoint/resume, DataParallel.

The loop is deliberately plain (forward, task loss + distillation loss, backward,
step). What it adds over a hand-written loop:

- a checkpoint (``checkpoint_dir/last``) written atomically at each epoch end, in a format
  that cannot run code when read (arrays in ``.npz`` loaded with ``allow_pickle=False``,
  everything else JSON),
  every ``save_every_steps`` steps and when ``max_steps`` stops the run; it holds
  the trainable weights, the optimizer (and LR scheduler) state, the random
  states of paddle, numpy and python, the position in the epoch and the
  history, so a resumed run gives the same weights as an uninterrupted one;
- under ``python -m paddle.distributed.launch`` (world size > 1) the model is
  wrapped in ``paddle.DataParallel``, a list of batches is split between the
  ranks, and only rank 0 writes checkpoints.

Example:
    >>> result = fit(distiller, train_batches, optimizer, epochs=3,                 # doctest: +SKIP
    ...              eval_fn=lambda m: evaluate(m, x_test, y_test), checkpoint_dir="ckpt")
    >>> result.history[-1]["metric"]                                               # doctest: +SKIP
"""

from __future__ import annotations

import json
import pickle
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import paddle
import paddle.nn.functional as F

from slim_core.atomic import atomic_dir, restore_interrupted_dir
from slim_core.data import Batches, data_errors
from slim_core.errors import ConfigError, DataError, ModelLoadError, SlimError
from slim_core.progress import progress
from slim_distill.distiller import _Distillation

__all__ = ["fit", "FitResult", "load_checkpoint", "optimizer_state", "set_optimizer_state"]

_STATE = "state.json"
_WEIGHTS = "model.npz"
_OPTIM_ARRAYS = "optimizer.npz"
_FILES = (_STATE, _WEIGHTS, _OPTIM_ARRAYS)
_PICKLED = ("state.pkl", "model.pdparams", "optimizer.pdopt")  # checkpoints of slim <= 0.x; loaded only with allow_pickle
_FORMAT = "slim-distill-checkpoint"
_FORMAT_VERSION = 1


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        history: one dict per finished epoch: ``epoch``, ``steps``, ``loss``, ``task_loss``,
            ``distill_loss`` (means over the epoch's steps) and ``metric`` (what ``eval_fn`` returned).
        steps: optimizer steps taken in total (including those before a resume).
        resumed_from: the global step the run resumed from, or None.
        stopped_early: True when ``max_steps`` ended the run before the last epoch finished.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    resumed_from: int | None = None
    stopped_early: bool = False


def _rng_state() -> dict[str, Any]:
    return {"paddle": paddle.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    paddle.set_rng_state(state["paddle"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _rng_to_json(state: dict[str, Any] | None) -> dict[str, Any] | None:
    if state is None:
        return None
    gens = []
    for g in state["paddle"]:
        device, seed, offset, mt = g.__getstate__()
        gens.append([device, seed, offset, bytes(mt).decode("latin-1")])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    version, internal, gauss_next = state["python"]
    return {
        "paddle": gens,
        "numpy": [kind, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
    }


def _rng_from_json(data: dict[str, Any] | None) -> dict[str, Any] | None:
    if data is None:
        return None
    gens = []
    cls = type(paddle.get_rng_state()[0])
    for device, seed, offset, mt in data["paddle"]:
        g = cls.__new__(cls)
        g.__setstate__((device, seed, offset, list(mt.encode("latin-1"))))
        gens.append(g)
    kind, keys, pos, has_gauss, gauss = data["numpy"]
    version, internal, gauss_next = data["python"]
    return {
        "paddle": gens,
        "numpy": (kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss),
        "python": (version, tuple(internal), gauss_next),
    }


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, paddle tensors
        return obj.tolist() if not hasattr(obj, "numpy") else np.asarray(obj.numpy()).tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:  # an object array (a pickle inside the npz) is refused
            return {k: np.asarray(data[k]) for k in data.files}
    except Exception as exc:
        raise ModelLoadError(f"checkpoint file {path} is corrupt or not plain arrays ({type(exc).__name__}: {exc})") from exc


def _load_pickled_checkpoint(last: Path) -> dict[str, Any]:
    with open(last / _PICKLED[0], "rb") as fh:
        state = pickle.load(fh)  # the caller opted in with allow_pickle=True
    return {"model": paddle.load(str(last / _PICKLED[1])), "optimizer": paddle.load(str(last / _PICKLED[2])), "state": state}


def load_checkpoint(checkpoint_dir: str | Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """Read ``checkpoint_dir/last`` written by :func:`fit`: ``{"model", "optimizer", "state"}``.

    The checkpoint holds arrays in ``.npz`` files (read with ``allow_pickle=False``) and
    JSON, so reading it cannot run code. Checkpoints of earlier slim versions were pickles;
    they are read only with ``allow_pickle=True``, since a pickle can run any code.

    Args:
        checkpoint_dir: the ``checkpoint_dir`` given to :func:`fit`.
        allow_pickle: accept an old pickled checkpoint (only for files you trust).

    Returns:
        ``{"model": state dict of arrays, "optimizer": see :func:`optimizer_state`, "state": loop state}``.

    Raises:
        SlimError: the checkpoint is missing or incomplete.
        ModelLoadError: a file is corrupt, holds pickled objects, or the checkpoint is an old
            pickle and ``allow_pickle`` is False.

    Example:
        >>> saved = load_checkpoint("ckpt")          # doctest: +SKIP
        >>> saved["state"]["global_step"]            # doctest: +SKIP
        12
    """
    last = Path(checkpoint_dir) / "last"
    if not (last / _STATE).is_file() and all((last / n).is_file() for n in _PICKLED):
        if not allow_pickle:
            raise ModelLoadError(
                f"checkpoint {last} is in the old pickle format, which can run code when loaded; "
                "pass allow_pickle=True (fit(..., allow_pickle=True)) only if you trust it"
            )
        return _load_pickled_checkpoint(last)
    missing = [n for n in _FILES if not (last / n).is_file()]
    if missing:
        raise SlimError(f"checkpoint {last} is incomplete or absent (missing {', '.join(missing)})")
    try:
        meta = json.loads((last / _STATE).read_text(encoding="utf-8"))
        if meta.get("format") != _FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        state = meta["state"]
        state["epoch_rng"] = _rng_from_json(state.get("epoch_rng"))
        state["now_rng"] = _rng_from_json(state.get("now_rng"))
        sched = meta.get("lr_scheduler")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelLoadError(f"checkpoint state {last / _STATE} is not a slim-distill checkpoint ({exc})") from exc
    optimizer: dict[str, Any] = {"accumulators": {}, "master_weights": {}}
    for key, arr in _read_npz(last / _OPTIM_ARRAYS).items():
        section, _, rest = key.partition("/")
        if section == "accumulators":
            kind, _, path = rest.partition("/")
            optimizer["accumulators"].setdefault(kind, {})[path] = arr
        elif section == "master_weights":
            optimizer["master_weights"][rest] = paddle.to_tensor(arr)
    if sched is not None:
        optimizer["LR_Scheduler"] = sched
    return {"model": _read_npz(last / _WEIGHTS), "optimizer": optimizer, "state": state}


def _optimizer_params(optimizer: Any) -> list[Any]:
    params = []
    for item in getattr(optimizer, "_parameter_list", None) or []:
        params.extend(item["params"] if isinstance(item, dict) else [item])
    return params


def optimizer_state(optimizer: Any, model: Any) -> dict[str, Any]:
    """The optimizer's state keyed by ``model.named_parameters()`` paths instead of Paddle's generated names.

    ``optimizer.state_dict()`` keys moments by generated tensor names
    (``conv2d_39.w_0_moment1_0``) that depend on how many layers the process
    built before, so it cannot be loaded into a rebuilt model reliably.
    """
    by_name = {p.name: path for path, p in model.named_parameters()}
    accumulators = {
        kind: {by_name[pname]: var for pname, var in per_param.items() if pname in by_name}
        for kind, per_param in getattr(optimizer, "_accumulators", {}).items()
    }
    master = {by_name[k]: v for k, v in (getattr(optimizer, "_master_weights", None) or {}).items() if k in by_name}
    state: dict[str, Any] = {"accumulators": accumulators, "master_weights": master}
    sched = _scheduler(optimizer)
    if sched is not None:
        state["LR_Scheduler"] = sched.state_dict()
    return state


def set_optimizer_state(optimizer: Any, model: Any, state: dict[str, Any]) -> None:
    """Load what :func:`optimizer_state` returned into a (possibly fresh) optimizer over ``model``."""
    params = dict(model.named_parameters())
    sched = _scheduler(optimizer)
    if sched is not None and "LR_Scheduler" in state:
        sched.set_state_dict(state["LR_Scheduler"])
    accumulators = state.get("accumulators", {})
    if any(accumulators.values()) and not getattr(optimizer, "_accumulators", None):
        # a fresh optimizer creates its moments lazily at the first step; create them now to fill them
        trainable = [p for p in _optimizer_params(optimizer) if not p.stop_gradient]
        optimizer._create_accumulators(paddle.static.default_main_program().global_block(), trainable)
    for kind, per_param in accumulators.items():
        for path, value in per_param.items():
            if path not in params:
                raise SlimError(f"checkpoint holds optimizer state for {path!r}, which the model does not have")
            current = optimizer._accumulators.get(kind, {}).get(params[path].name)
            if current is None:
                raise SlimError(
                    f"the optimizer has no {kind!r} state for {path!r}: it is not the optimizer type the checkpoint was made with"
                )
            current.set_value(value)
    master = state.get("master_weights") or {}
    if master and hasattr(optimizer, "_master_weights"):
        optimizer._master_weights = {params[k].name: v for k, v in master.items() if k in params}


def _save_checkpoint(checkpoint_dir: Path, inner: Any, optimizer: Any, state: dict[str, Any]) -> None:
    opt = optimizer_state(optimizer, inner)
    arrays = {f"accumulators/{kind}/{path}": v for kind, per_param in opt["accumulators"].items() for path, v in per_param.items()}
    arrays.update({f"master_weights/{path}": v for path, v in opt["master_weights"].items()})
    meta = {
        "format": _FORMAT,
        "version": _FORMAT_VERSION,
        "state": {**state, "epoch_rng": _rng_to_json(state["epoch_rng"]), "now_rng": _rng_to_json(state["now_rng"])},
        "lr_scheduler": opt.get("LR_Scheduler"),
    }
    text = json.dumps(meta, default=_json_default)  # before anything is written: a metric JSON cannot hold fails here
    with atomic_dir(checkpoint_dir / "last", overwrite=True) as tmp:
        for name, tensors in ((_WEIGHTS, inner.state_dict()), (_OPTIM_ARRAYS, arrays)):
            with open(tmp / name, "wb") as fh:
                np.savez(fh, **{k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in tensors.items()})
        (tmp / _STATE).write_text(text, encoding="utf-8")


def _task_loss_fn(task_loss: Any) -> Callable[[Any, Any], Any] | None:
    if task_loss is None:
        return None
    if task_loss == "cross_entropy":
        return lambda logits, labels: F.cross_entropy(logits, labels.reshape([-1]).astype("int64"))
    if callable(task_loss):
        return task_loss
    raise ConfigError(f"task_loss={task_loss!r} must be 'cross_entropy', None or a callable (output, labels) -> loss")


def _scheduler(optimizer: Any) -> Any:
    lr = getattr(optimizer, "_learning_rate", None)
    return lr if isinstance(lr, paddle.optimizer.lr.LRScheduler) else None


def _parallel_setup(distiller: Any, train_data: Any) -> tuple[Any, Any, Any, int, int]:
    """Wrap in DataParallel and shard a list of batches when launched on several ranks."""
    import paddle.distributed as dist

    inner = distiller._layers if isinstance(distiller, paddle.DataParallel) else distiller
    world = dist.get_world_size()
    if world <= 1:
        return distiller, inner, train_data, 0, 1
    if not dist.is_initialized():
        dist.init_parallel_env()
    rank = dist.get_rank()
    model = distiller if isinstance(distiller, paddle.DataParallel) else paddle.DataParallel(distiller)
    if isinstance(train_data, Sequence) and not isinstance(train_data, (str, bytes)):
        if len(train_data) < world:
            raise DataError(f"{len(train_data)} batches cannot be split between {world} ranks")
        usable = len(train_data) - len(train_data) % world  # equal step counts on every rank, or the all-reduce hangs
        train_data = list(train_data[rank:usable:world])
    return model, inner, train_data, rank, world


def fit(
    distiller: Any,
    train_data: Any,
    optimizer: Any,
    epochs: int = 1,
    eval_fn: Callable[[Any], Any] | None = None,
    *,
    task_loss: str | Callable[[Any, Any], Any] | None = "cross_entropy",
    task_weight: float = 1.0,
    input_names: Sequence[str] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    allow_pickle: bool = False,
    save_every_steps: int | None = None,
    max_steps: int | None = None,
    scheduler_step: Literal["epoch", "step"] = "epoch",
    desc: str = "distill",
) -> FitResult:
    """Train a :class:`Distiller` (or :class:`MutualLearner`) for some epochs.

    Each step: ``out = distiller(*inputs)``; ``loss = task_weight * task_loss(out, labels)
    + distiller.loss(labels)``; backward; ``optimizer.step()``.

    Args:
        distiller: a Distiller / MutualLearner (or one wrapped in ``paddle.DataParallel``).
        train_data: batches ``(x, label)``, ``x`` alone, or dicts; a list, DataLoader or any
            re-iterable (see ``slim_core.Batches``). Under several ranks a list is split
            between them; a DataLoader should use ``paddle.io.DistributedBatchSampler``.
        optimizer: a Paddle optimizer over ``distiller.parameters()``.
        epochs: number of passes over ``train_data``.
        eval_fn: called after each epoch with the student (the list of students for DML);
            its return value (a number or dict) is stored as ``metric`` in the history.
        task_loss: ``"cross_entropy"`` (default, on integer labels), a callable
            ``(output, labels) -> loss``, or None for distillation only. Skipped for
            batches without labels.
        task_weight: factor of the task loss.
        input_names: names of the model inputs when batches hold several (default one input).
        checkpoint_dir: where ``last/`` is written; None disables checkpoints.
        resume: continue from ``checkpoint_dir/last`` when it exists.
        allow_pickle: resume from a checkpoint of an earlier slim version, which was a pickle
            (see :func:`load_checkpoint`); new checkpoints never are.
        save_every_steps: also checkpoint every this many steps.
        max_steps: stop after this many steps in total (the checkpoint is written first).
        scheduler_step: step an ``LRScheduler`` learning rate once per ``"epoch"`` or per ``"step"``.
        desc: progress bar label.

    Returns:
        A :class:`FitResult` with the per-epoch history.

    Raises:
        ConfigError: bad arguments. DataError: empty or invalid batches.
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError(f"epochs={epochs!r} must be an integer >= 1")
    for name, value in (("save_every_steps", save_every_steps), ("max_steps", max_steps)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name}={value!r} must be an integer >= 1 or None")
    if scheduler_step not in ("epoch", "step"):
        raise ConfigError(f"scheduler_step={scheduler_step!r} must be 'epoch' or 'step'")
    if not (hasattr(optimizer, "step") and hasattr(optimizer, "clear_grad")):
        raise ConfigError(f"optimizer must be a paddle optimizer, got {type(optimizer).__name__}")
    model, inner, train_data, rank, world = _parallel_setup(distiller, train_data)
    if not isinstance(inner, _Distillation):
        raise ConfigError(f"fit() trains a Distiller or MutualLearner, got {type(inner).__name__}")
    task_fn = _task_loss_fn(task_loss)
    batches = Batches(train_data, input_names)
    sched = _scheduler(optimizer)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None

    result = FitResult()
    start_epoch, skip, running = 0, 0, [0.0, 0.0, 0.0]
    epoch_rng: dict[str, Any] | None = None
    now_rng: dict[str, Any] | None = None
    if ckpt is not None and resume:
        restore_interrupted_dir(ckpt / "last")  # a kill between the two renames of a checkpoint write
    if ckpt is not None and resume and (ckpt / "last").exists():
        saved = load_checkpoint(ckpt, allow_pickle=allow_pickle)
        inner.set_state_dict(saved["model"])
        set_optimizer_state(optimizer, inner, saved["optimizer"])
        st = saved["state"]
        start_epoch, skip, running = st["epoch"], st["step_in_epoch"], list(st["running"])
        result.history, result.steps, result.resumed_from = list(st["history"]), st["global_step"], st["global_step"]
        epoch_rng, now_rng = st["epoch_rng"], st["now_rng"]
        if not skip:  # saved at an epoch boundary: continue from the random state of that moment
            _set_rng_state(now_rng)
            now_rng = None

    def save(epoch: int, step_in_epoch: int, e_rng: dict[str, Any] | None) -> None:
        if ckpt is None:
            return
        if rank == 0:
            state = {
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "global_step": result.steps,
                "running": list(running),
                "history": result.history,
                "epoch_rng": e_rng,
                "now_rng": _rng_state(),
            }
            _save_checkpoint(ckpt, inner, optimizer, state)
        if world > 1:
            paddle.distributed.barrier()

    if max_steps is not None and result.steps >= max_steps:
        result.stopped_early = True
        return result
    for epoch in range(start_epoch, epochs):
        model.train()
        if skip and epoch_rng is not None:
            _set_rng_state(epoch_rng)  # replay the epoch's shuffling, then skip what was already trained
        else:
            epoch_rng, skip, running = _rng_state(), 0, [0.0, 0.0, 0.0]
        steps_here = skip
        total = len(train_data) if hasattr(train_data, "__len__") else None
        for idx, (inputs, rest) in enumerate(progress(batches.with_rest(), desc=f"{desc} {epoch + 1}/{epochs}", total=total)):
            if idx < skip:
                continue
            if idx == skip and skip and now_rng is not None:
                _set_rng_state(now_rng)
                now_rng = None
            args = [paddle.to_tensor(v) for v in inputs.values()]
            labels = paddle.to_tensor(np.asarray(rest[0])) if rest else None
            with data_errors(model, args, names=list(inputs), where=f"training batch {idx}"):
                out, dloss = model(*args, with_loss=True, loss_labels=labels)
            loss = dloss
            tval = 0.0
            if task_fn is not None and labels is not None:
                tloss = None
                for logits in inner.task_outputs(out):
                    term = task_fn(logits, labels)
                    tloss = term if tloss is None else tloss + term
                loss = loss + tloss * task_weight
                tval = float(tloss)
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            if sched is not None and scheduler_step == "step":
                sched.step()
            result.steps += 1
            steps_here += 1
            running[0] += float(loss)
            running[1] += tval
            running[2] += float(dloss)
            if max_steps is not None and result.steps >= max_steps:
                save(epoch, steps_here, epoch_rng)  # a later call with resume=True finishes the epoch (and evaluates)
                result.stopped_early = True
                return result
            if save_every_steps and result.steps % save_every_steps == 0:
                save(epoch, steps_here, epoch_rng)
        if now_rng is not None:  # the checkpoint was taken after the epoch's last step
            _set_rng_state(now_rng)
            now_rng = None
        skip = 0
        if sched is not None and scheduler_step == "epoch":
            sched.step()
        n = max(steps_here, 1)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "steps": steps_here,
            "loss": running[0] / n,
            "task_loss": running[1] / n,
            "distill_loss": running[2] / n,
        }
        if eval_fn is not None:
            record["metric"] = eval_fn(inner.eval_target())
        result.history.append(record)
        running = [0.0, 0.0, 0.0]
        save(epoch + 1, 0, None)
    return result
