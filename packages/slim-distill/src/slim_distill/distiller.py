"""The Distiller: a student trained to match a frozen teacher, in any training loop.

Example:
    >>> import paddle
    >>> from slim_core.demo import build_tiny_cnn
    >>> student, teacher = build_tiny_cnn(width=8), build_tiny_cnn(width=16)
    >>> cfg = {"logits": {"loss": "kl", "temperature": 4.0},
    ...        "pairs": [{"student": "bn2", "teacher": "bn2", "loss": "mse"}]}
    >>> x = paddle.rand([4, 1, 8, 8])
    >>> distiller = Distiller(student, teacher, cfg, example_inputs=x)  # adds a 1x1 conv 16->32
    >>> out = distiller(x)                    # the student's logits
    >>> loss = distiller.loss()               # weighted sum of the distillation terms
    >>> sorted(distiller.adaptors.keys())
    ['p0_0']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import paddle
import paddle.nn as nn

from slim_core.errors import ConfigError
from slim_distill.config import DistillConfig, DMLConfig, LogitsConfig, PairConfig, is_pattern
from slim_distill.errors import DistillError, ShapeMismatchError
from slim_distill.hooks import FeatureRecorder, select_output
from slim_distill.losses import LOSSES

__all__ = ["Distiller", "MutualLearner", "make_adaptor"]


def _as_layer(model: Any, what: str) -> Any:
    if not isinstance(model, nn.Layer):
        raise ConfigError(f"{what} must be a paddle.nn.Layer, got {type(model).__name__}")
    return model


def _as_args(example_inputs: Any) -> tuple[Any, ...]:
    items = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    return tuple(paddle.to_tensor(v) if isinstance(v, np.ndarray) else v for v in items)


def _channel_axis(ndim: int) -> int:
    return 1 if ndim == 4 else ndim - 1


def make_adaptor(student_shape: Sequence[int], teacher_shape: Sequence[int]) -> Any:
    """A trainable layer mapping the student's width onto the teacher's.

    A 1x1 ``Conv2D`` for NCHW maps, a ``Linear`` on the last axis for ``[N, C]``
    and ``[N, L, C]`` tensors.

    Raises:
        ShapeMismatchError: the tensors differ in more than their width.
    """
    s, t = list(student_shape), list(teacher_shape)
    if len(s) != len(t) or len(s) not in (2, 3, 4):
        raise ShapeMismatchError(f"no adaptor maps a tensor of shape {s} onto {t}: adaptors handle [N, C], [N, L, C] and [N, C, H, W]")
    axis = _channel_axis(len(s))
    rest_s = s[:axis] + s[axis + 1 :]
    rest_t = t[:axis] + t[axis + 1 :]
    if rest_s != rest_t:
        raise ShapeMismatchError(
            f"student shape {s} and teacher shape {t} differ outside the channel axis {axis}; "
            "an adaptor only changes the width (pick layers at the same resolution)"
        )
    if len(s) == 4:
        return nn.Conv2D(s[1], t[1], 1)
    return nn.Linear(s[-1], t[-1])


class _Distillation(nn.Layer):
    """Shared loss bookkeeping of :class:`Distiller` and :class:`MutualLearner`."""

    def __init__(self) -> None:
        super().__init__()
        self._ran = False

    def forward(self, *args: Any, with_loss: bool = False, loss_labels: Any = None, **kwargs: Any) -> Any:
        """Run the models on ``args`` / ``kwargs``; return the student output(s).

        Args:
            with_loss: also return the distillation loss, as ``(output, loss)``. Use it under
                ``paddle.DataParallel``, which only synchronises parameters that the tensors
                returned by ``forward`` depend on.
            loss_labels: labels handed to :meth:`loss` when ``with_loss`` is set.
        """
        out = self._run(*args, **kwargs)
        return (out, self.loss(loss_labels)) if with_loss else out

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _terms(self, labels: Any) -> list[tuple[str, float, Any]]:
        raise NotImplementedError

    def losses(self, labels: Any = None) -> dict[str, Any]:
        """Each distillation term of the last forward, unweighted, by a readable key.

        Args:
            labels: class labels ``[N]``; used by losses that take them (``dkd``).
        """
        if not self._ran:
            raise DistillError(f"{type(self).__name__}.loss() needs a forward first: call it on a batch, then ask for the loss")
        return {key: value for key, _, value in self._terms(labels)}

    def loss(self, labels: Any = None) -> Any:
        """Weighted sum of all distillation terms of the last forward (a scalar Tensor).

        Args:
            labels: class labels ``[N]``; used by losses that take them (``dkd``).
        """
        if not self._ran:
            raise DistillError(f"{type(self).__name__}.loss() needs a forward first: call it on a batch, then ask for the loss")
        total = None
        for _, weight, value in self._terms(labels):
            term = value * weight
            total = term if total is None else total + term
        return total

    def task_outputs(self, output: Any) -> list[Any]:
        """The logits a task loss applies to (one per trained model)."""
        raise NotImplementedError

    def eval_target(self) -> Any:
        """What ``fit`` hands to ``eval_fn``."""
        raise NotImplementedError


def _call_loss(name: str, student: Any, teacher: Any, kwargs: dict[str, Any], labels: Any) -> Any:
    entry = LOSSES.get(name)
    if labels is not None and entry.takes_labels():
        return entry.fn(student, teacher, labels=labels, **kwargs)
    return entry.fn(student, teacher, **kwargs)


class Distiller(_Distillation):
    """Wrap a student and a frozen teacher; ``distiller(x)`` runs both, ``loss()`` compares them.

    The teacher is put in eval mode, runs under ``paddle.no_grad()`` and is not a
    sublayer: ``distiller.parameters()`` and ``state_dict()`` hold the student and
    the adaptors only, so an optimizer built on them trains exactly those.
    Features come from forward hooks on the named sublayers (removed by
    :meth:`remove_hooks` or at the end of a ``with`` block).

    Args:
        student: the model being trained (``paddle.nn.Layer``).
        teacher: the trained model whose behaviour the student learns.
        config: a :class:`DistillConfig` or its dict form.
        example_inputs: one batch (tensor, array, or tuple of them). With it, every pair is
            checked and the adaptors are created now, before you build the optimizer;
            without it, pairs are checked on the first forward and a needed adaptor is an error.

    Raises:
        LayerNotFoundError: a name matches no sublayer (close names listed).
        ShapeMismatchError: teacher logits or features cannot be compared with the student's.
        ConfigError: invalid config (unknown loss, temperature <= 0, ...).

    Example:
        >>> distiller = Distiller(student, teacher, DistillConfig(logits=LogitsConfig(temperature=4.0)))  # doctest: +SKIP
        >>> opt = paddle.optimizer.Adam(parameters=distiller.parameters())                                 # doctest: +SKIP
        >>> logits = distiller(x); loss = ce(logits, y) + distiller.loss(); loss.backward()                 # doctest: +SKIP
    """

    def __init__(self, student: Any, teacher: Any, config: DistillConfig | dict[str, Any], *, example_inputs: Any = None) -> None:
        super().__init__()
        _as_layer(student, "student")
        _as_layer(teacher, "teacher")
        if student is teacher:
            raise ConfigError("student and teacher are the same Layer object; distill from a separate (trained) teacher")
        if isinstance(config, dict):
            config = DistillConfig.from_dict(config)
        if not isinstance(config, DistillConfig):
            raise ConfigError(f"config must be a DistillConfig or a dict, got {type(config).__name__}")
        self.config = config
        self.student = student
        self.__dict__["_teacher"] = teacher  # deliberately not a sublayer: no parameters, no state_dict, no DataParallel sync
        self._srec = FeatureRecorder(student, "student")
        self._trec = FeatureRecorder(teacher, "teacher")
        self.pairs: list[PairConfig] = self._expand(config.pairs)
        for pair in self.pairs:
            for name in _names(pair.student):
                self._srec.watch(name)
            for name in _names(pair.teacher):
                self._trec.watch(name)
        self.adaptors = nn.LayerDict()
        self._checked = False
        self._building = False
        self._outputs: tuple[Any, Any] | None = None
        self._feats: list[tuple[list[Any], list[Any]]] = []
        teacher.eval()
        if example_inputs is not None:
            self._probe(_as_args(example_inputs))

    @property
    def teacher(self) -> Any:
        """The frozen teacher model."""
        return self._teacher

    # setup -----------------------------------------------------------------
    def _expand(self, pairs: list[PairConfig]) -> list[PairConfig]:
        out = []
        for pair in pairs:
            if isinstance(pair.student, str) and is_pattern(pair.student):
                s_names = self._srec.expand(pair.student)
                t_names = self._trec.expand(pair.teacher)
                if len(s_names) != len(t_names):
                    raise ConfigError(
                        f"pattern pair {pair.student!r} -> {pair.teacher!r} matches {len(s_names)} student layers "
                        f"({', '.join(s_names)}) but {len(t_names)} teacher layers ({', '.join(t_names)}); the counts must agree"
                    )
                out.extend(pair.replace(student=s, teacher=t) for s, t in zip(s_names, t_names))
            else:
                for name in _names(pair.student):
                    self._srec.resolve(name)
                for name in _names(pair.teacher):
                    self._trec.resolve(name)
                out.append(pair)
        return out

    def _probe(self, args: tuple[Any, ...]) -> None:
        was_training = self.student.training
        self.student.eval()  # the probe must not move BatchNorm statistics
        self._building = True
        try:
            with paddle.no_grad():
                self.forward(*args)
                self.loss()  # surfaces loss-specific shape errors now rather than mid-training
        finally:
            self._building = False
            self._ran = False
            self._outputs = None
            self._feats = []
            self._srec.clear()
            self._trec.clear()
            if was_training:
                self.student.train()

    def _features(self, pair: PairConfig) -> tuple[list[Any], list[Any]]:
        s_names, t_names = _names(pair.student), _names(pair.teacher)
        s = [self._srec.get(n, pair.student_io, pair.student_index, pair.student_call) for n in s_names]
        t = [self._trec.get(n, pair.teacher_io, pair.teacher_index, pair.teacher_call) for n in t_names]
        return s, t

    def _check(self) -> None:
        """First-forward checks: logit shapes, feature shapes, adaptors."""
        logits = self.config.logits
        if logits is not None:
            s, t = self._logits(logits)
            if list(s.shape) != list(t.shape):
                raise ShapeMismatchError(
                    f"the teacher output has shape {list(t.shape)} but the student output {list(s.shape)}: the logit loss "
                    f"{logits.loss!r} needs the same shape (same number of classes; set logits.student_index / teacher_index "
                    "for models with several outputs)"
                )
        for i, pair in enumerate(self.pairs):
            s_list, t_list = self._features(pair)
            align = LOSSES.get(pair.loss).align
            for j, (s, t) in enumerate(zip(s_list, t_list)):
                self._check_feature(i, j, pair, align, s, t)
        self._checked = True

    def _check_feature(self, i: int, j: int, pair: PairConfig, align: str, s: Any, t: Any) -> None:
        where = f"pair {pair.label()}"
        if s.shape[0] != t.shape[0]:
            raise ShapeMismatchError(f"{where}: student batch {s.shape[0]} differs from teacher batch {t.shape[0]}")
        if list(s.shape) == list(t.shape) or align == "any":
            return
        if align == "exact":
            raise ShapeMismatchError(
                f"{where}: loss {pair.loss!r} needs equal shapes, got student {list(s.shape)} and teacher {list(t.shape)}"
            )
        if pair.adaptor == "none":
            raise ShapeMismatchError(f"{where}: student {list(s.shape)} and teacher {list(t.shape)} differ and adaptor='none'")
        adaptor = make_adaptor(s.shape, t.shape)  # raises when more than the width differs
        if not self._building:
            raise DistillError(
                f"{where}: student width {s.shape[_channel_axis(s.ndim)]} differs from teacher width "
                f"{t.shape[_channel_axis(t.ndim)]}, so an adaptor is needed; pass example_inputs= to Distiller so it is "
                "created before the optimizer is built (the optimizer must see its parameters)"
            )
        self.adaptors[f"p{i}_{j}"] = adaptor

    def _logits(self, logits: LogitsConfig) -> tuple[Any, Any]:
        assert self._outputs is not None
        s_out, t_out = self._outputs
        s = select_output(s_out, logits.student_index, "student output")
        t = select_output(t_out, logits.teacher_index, "teacher output")
        return s, t

    # running ---------------------------------------------------------------
    def _run(self, *args: Any, **kwargs: Any) -> Any:
        """Run the teacher (no grad) and the student on the same inputs; return the student's output."""
        teacher = self._teacher
        if teacher.training:  # someone switched it back; the teacher's BN/dropout must stay frozen
            teacher.eval()
        with self._trec.recording(), paddle.no_grad():
            t_out = teacher(*args, **kwargs)
        with self._srec.recording():
            s_out = self.student(*args, **kwargs)
        self._outputs = (s_out, t_out)
        if not self._checked:
            self._check()
        # adaptors run here, inside forward, so DataParallel sees their parameters used by the forward pass
        self._feats = []
        for i, pair in enumerate(self.pairs):
            s_list, t_list = self._features(pair)
            s_list = [self.adaptors[f"p{i}_{j}"](s) if f"p{i}_{j}" in self.adaptors else s for j, s in enumerate(s_list)]
            self._feats.append((s_list, t_list))
        self._srec.clear()
        self._trec.clear()
        self._ran = True
        return s_out

    def _terms(self, labels: Any) -> list[tuple[str, float, Any]]:
        terms = []
        logits = self.config.logits
        if logits is not None:
            s, t = self._logits(logits)
            terms.append((f"logits:{logits.loss}", logits.weight, _call_loss(logits.loss, s, t, logits.kwargs(), labels)))
        for i, (pair, (s_list, t_list)) in enumerate(zip(self.pairs, self._feats)):
            s_arg = s_list[0] if len(s_list) == 1 else s_list
            t_arg = t_list[0] if len(t_list) == 1 else t_list
            terms.append((f"pair{i}:{pair.label()}", pair.weight, _call_loss(pair.loss, s_arg, t_arg, pair.kwargs(), labels)))
        return terms

    @property
    def teacher_output(self) -> Any:
        """The teacher's output of the last forward."""
        return None if self._outputs is None else self._outputs[1]

    def task_outputs(self, output: Any) -> list[Any]:
        index = self.config.logits.student_index if self.config.logits is not None else None
        return [select_output(output, index, "student output")]

    def eval_target(self) -> Any:
        return self.student

    def remove_hooks(self) -> None:
        """Detach every forward hook from the student and the teacher."""
        self._srec.remove()
        self._trec.remove()

    def __enter__(self) -> Distiller:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove_hooks()


def _names(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class MutualLearner(_Distillation):
    """Deep mutual learning: two or more students, each also learning from its peers' predictions.

    ``learner(x)`` returns the list of outputs; ``learner.loss()`` is the weight
    times the sum over students of the mean loss towards each (detached) peer, so
    one backward trains every student with its own DML gradient. Add each
    student's task loss yourself (``fit`` does).

    Args:
        students: two or more ``paddle.nn.Layer`` models with outputs of equal shape.
        config: a :class:`DMLConfig` or its dict form (default: KL, T = 1).

    Example:
        >>> learner = MutualLearner([net_a, net_b], DMLConfig(temperature=2.0))  # doctest: +SKIP
        >>> outs = learner(x)                                                     # doctest: +SKIP
        >>> loss = sum(ce(o, y) for o in outs) + learner.loss()                   # doctest: +SKIP
    """

    def __init__(self, students: Sequence[Any], config: DMLConfig | dict[str, Any] | None = None) -> None:
        super().__init__()
        students = list(students)
        if len(students) < 2:
            raise ConfigError(f"mutual learning needs at least two students, got {len(students)}")
        for i, s in enumerate(students):
            _as_layer(s, f"students[{i}]")
        if len({id(s) for s in students}) != len(students):
            raise ConfigError("the same Layer object appears twice among the students")
        if config is None or isinstance(config, dict):
            config = DMLConfig.from_dict(config or {})
        self.config = config
        self.students = nn.LayerList(students)
        self._outs: list[Any] = []

    def _run(self, *args: Any, **kwargs: Any) -> list[Any]:
        """Run every student; return their outputs in order."""
        outs = [select_output(s(*args, **kwargs), None, f"students[{i}] output") for i, s in enumerate(self.students)]
        shapes = {tuple(o.shape) for o in outs}
        if len(shapes) > 1:
            raise ShapeMismatchError(f"mutual learning needs outputs of one shape; the students gave {[list(o.shape) for o in outs]}")
        self._outs = outs
        self._ran = True
        return outs

    def _terms(self, labels: Any) -> list[tuple[str, float, Any]]:
        n = len(self._outs)
        terms = []
        for i, out in enumerate(self._outs):
            peers = [
                _call_loss(self.config.loss, out, other.detach(), self.config.kwargs(), labels)
                for j, other in enumerate(self._outs)
                if j != i
            ]
            terms.append((f"student{i}", self.config.weight, paddle.add_n(peers) / float(n - 1)))
        return terms

    def task_outputs(self, output: Any) -> list[Any]:
        return list(output)

    def eval_target(self) -> Any:
        return list(self.students)
