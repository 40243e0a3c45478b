"""Distillation losses and the registry that names them.

Every loss takes the student tensor first and the teacher tensor second (lists of
two tensors for FSP) and returns a scalar. The registry entry also says how the
two sides must line up, which tells the :class:`~slim_distill.Distiller` whether
it may insert an adaptor:

- ``"exact"``: same shape required (logit losses: ``kl``, ``dkd``); never adapted.
- ``"adapt"``: same shape after a 1x1 conv / linear adaptor on the student side
  (``mse``, ``l2``, ``l1``, ``smooth_l1``, ``cosine``, ``fsp``).
- ``"any"``: widths may differ, the loss compares structure (``at``,
  ``rkd_distance``, ``rkd_angle``); only the batch size must agree.

Add your own with :func:`register_loss`.

Example:
    >>> import paddle
    >>> s, t = paddle.to_tensor([[1.0, 2.0]]), paddle.to_tensor([[1.0, 3.0]])
    >>> round(float(LOSSES.get("mse").fn(s, t)), 3)
    0.5
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import paddle
import paddle.nn.functional as F

from slim_core.errors import ConfigError
from slim_core.registry import Registry, closest
from slim_distill.errors import ShapeMismatchError

__all__ = [
    "LOSSES",
    "DistillLoss",
    "register_loss",
    "kl_div",
    "mse",
    "l1",
    "smooth_l1",
    "cosine",
    "fsp",
    "attention_transfer",
    "rkd_distance",
    "rkd_angle",
    "dkd",
]

Align = Literal["exact", "adapt", "any"]
LOSSES = Registry("distillation loss")


@dataclass(frozen=True)
class DistillLoss:
    """A registry entry: the loss function and how its two inputs must line up.

    Attributes:
        fn: ``fn(student, teacher, **params) -> scalar Tensor``; may take ``labels``.
        align: ``"exact"``, ``"adapt"`` or ``"any"`` (see the module docstring).
        arity: tensors per side: 1, or 2 for losses over a pair of layers (FSP).
    """

    fn: Callable[..., Any]
    align: Align = "adapt"
    arity: int = 1

    def param_names(self) -> list[str]:
        """Keyword parameters the function accepts (besides the tensors and ``labels``)."""
        sig = inspect.signature(self.fn)
        names = list(sig.parameters)[2:]
        return [n for n in names if n != "labels"]

    def takes_labels(self) -> bool:
        return "labels" in inspect.signature(self.fn).parameters

    def check_params(self, name: str, params: dict[str, Any]) -> None:
        """Raise ConfigError when ``params`` holds a key the loss does not take."""
        allowed = self.param_names()
        for key in params:
            if key not in allowed:
                hint = closest(key, allowed)
                did = f"; did you mean {hint!r}?" if hint else ""
                raise ConfigError(f"loss {name!r} has no parameter {key!r}{did} (it takes: {', '.join(allowed) or 'none'})")


def register_loss(
    name: str, *, align: Align = "adapt", arity: int = 1, overwrite: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that adds a loss function to :data:`LOSSES`.

    Args:
        name: the name configs use (``PairConfig(loss=name)``).
        align: how student and teacher tensors must line up (see module docstring).
        arity: 1, or 2 when each side is a pair of layers.
        overwrite: replace an existing entry of the same name.

    Returns:
        The decorator; the function itself is returned unchanged.

    Example:
        >>> @register_loss("my_l1", align="adapt")  # doctest: +SKIP
        ... def my_l1(s, t, scale: float = 1.0):
        ...     return scale * (s - t).abs().mean()
    """
    if align not in ("exact", "adapt", "any"):
        raise ConfigError(f"align={align!r} is not one of 'exact', 'adapt', 'any'")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        LOSSES.register(name, overwrite=overwrite)(DistillLoss(fn, align, arity))
        return fn

    return deco


def _same_shape(s: Any, t: Any, what: str) -> None:
    if list(s.shape) != list(t.shape):
        raise ShapeMismatchError(f"{what}: student tensor has shape {list(s.shape)}, teacher tensor {list(t.shape)}; they must be equal")


def _check_temperature(loss: str, temperature: float) -> float:
    if not temperature > 0:  # also rejects NaN
        raise ConfigError(f"{loss}: temperature={temperature!r} must be > 0 (it divides the logits)")
    return float(temperature)


def _flat(x: Any) -> Any:
    return x.reshape([x.shape[0], -1])


def _huber(diff: Any, beta: float) -> Any:
    ad = diff.abs()
    return paddle.where(ad < beta, 0.5 * diff * diff / beta, ad - 0.5 * beta)


@register_loss("kl", align="exact")
def kl_div(student: Any, teacher: Any, temperature: float = 1.0) -> Any:
    """Soft-label KL(teacher || student) over the last axis, softened by ``temperature``, times T².

    The sum over classes is averaged over every other position (the batch for
    ``[N, C]`` logits), and multiplied by ``T**2`` so gradients keep their scale
    when T changes (Hinton et al., 2015).
    """
    _same_shape(student, teacher, "kl")
    t = _check_temperature("kl", temperature)
    log_ps = F.log_softmax(student / t, axis=-1)
    log_pt = F.log_softmax(teacher / t, axis=-1)
    per_row = (log_pt.exp() * (log_pt - log_ps)).sum(axis=-1)
    return per_row.mean() * (t * t)


@register_loss("mse", align="adapt")
def mse(student: Any, teacher: Any) -> Any:
    """Mean squared error over all elements (FitNets hint loss)."""
    _same_shape(student, teacher, "mse")
    d = student - teacher
    return (d * d).mean()


register_loss("l2", align="adapt")(mse)  # the usual name of the same loss in PaddleSlim recipes


@register_loss("l1", align="adapt")
def l1(student: Any, teacher: Any) -> Any:
    """Mean absolute error over all elements."""
    _same_shape(student, teacher, "l1")
    return (student - teacher).abs().mean()


@register_loss("smooth_l1", align="adapt")
def smooth_l1(student: Any, teacher: Any, beta: float = 1.0) -> Any:
    """Smooth L1: ``0.5 d²/beta`` where ``|d| < beta``, else ``|d| - beta/2``; averaged."""
    _same_shape(student, teacher, "smooth_l1")
    if beta <= 0:
        raise ConfigError(f"smooth_l1: beta={beta} must be > 0")
    return _huber(student - teacher, float(beta)).mean()


@register_loss("cosine", align="adapt")
def cosine(student: Any, teacher: Any, eps: float = 1e-8) -> Any:
    """``1 - cos(student, teacher)`` per sample (features flattened), averaged over the batch."""
    _same_shape(student, teacher, "cosine")
    s, t = _flat(student), _flat(teacher)
    num = (s * t).sum(axis=1)
    den = (s * s).sum(axis=1).sqrt() * (t * t).sum(axis=1).sqrt()
    return (1.0 - num / paddle.clip(den, min=eps)).mean()


def _fsp_matrix(a: Any, b: Any) -> Any:
    if a.ndim != 4 or b.ndim != 4:
        raise ShapeMismatchError(f"fsp needs NCHW feature maps, got shapes {list(a.shape)} and {list(b.shape)}")
    if list(a.shape[2:]) != list(b.shape[2:]):  # FSP needs one grid: pool the finer map to the coarser one
        h, w = min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3])
        a = F.adaptive_avg_pool2d(a, [h, w])
        b = F.adaptive_avg_pool2d(b, [h, w])
    n, c1, h, w = a.shape
    a2 = a.reshape([n, c1, h * w])
    b2 = b.reshape([n, b.shape[1], h * w])
    return paddle.matmul(a2, b2, transpose_y=True) / float(h * w)


@register_loss("fsp", align="adapt", arity=2)
def fsp(student: Any, teacher: Any) -> Any:
    """Flow-of-solution-procedure loss (Yim et al., 2017) between two layers per side.

    ``student`` and ``teacher`` are each ``[first, second]`` NCHW maps; the FSP
    matrix is ``first · secondᵀ / (H·W)``; the loss is the mean squared difference.
    """
    gs, gt = _fsp_matrix(*student), _fsp_matrix(*teacher)
    _same_shape(gs, gt, "fsp matrix")
    d = gs - gt
    return (d * d).mean()


def _attention_map(x: Any, p: float) -> Any:
    if x.ndim != 4:
        raise ShapeMismatchError(f"attention transfer needs NCHW feature maps, got shape {list(x.shape)}")
    a = x.abs().pow(p).mean(axis=1).reshape([x.shape[0], -1])
    return F.normalize(a, p=2, axis=1)


@register_loss("at", align="any")
def attention_transfer(student: Any, teacher: Any, p: float = 2.0) -> Any:
    """Attention transfer (Zagoruyko & Komodakis, 2017): mean squared distance of normalized spatial attention maps.

    Widths may differ; the spatial grids must agree.
    """
    if list(student.shape[2:]) != list(teacher.shape[2:]) or student.shape[0] != teacher.shape[0]:
        raise ShapeMismatchError(
            f"at: student map {list(student.shape)} and teacher map {list(teacher.shape)} need the same batch size and spatial size"
        )
    d = _attention_map(student, p) - _attention_map(teacher, p)
    return (d * d).mean()


def _pairwise_distance(e: Any) -> Any:
    n = e.shape[0]
    diff = e.unsqueeze(1) - e.unsqueeze(0)
    d = (diff * diff).sum(axis=-1).clip(min=1e-12).sqrt()
    return d * (1.0 - paddle.eye(n, dtype=d.dtype))


def _check_batch(student: Any, teacher: Any, what: str) -> None:
    if student.shape[0] != teacher.shape[0]:
        raise ShapeMismatchError(f"{what}: student batch {student.shape[0]} differs from teacher batch {teacher.shape[0]}")
    if student.shape[0] < 2:
        raise ShapeMismatchError(f"{what} compares samples with each other and needs a batch of at least 2 (got {student.shape[0]})")


@register_loss("rkd_distance", align="any")
def rkd_distance(student: Any, teacher: Any) -> Any:
    """Relational KD, distance term (Park et al., 2019).

    Pairwise Euclidean distances between the samples of the batch, each matrix
    divided by its mean off-diagonal distance, compared with smooth L1 (beta 1).
    """
    _check_batch(student, teacher, "rkd_distance")
    n = student.shape[0]
    off = float(n * (n - 1))
    ds = _pairwise_distance(_flat(student))
    dt = _pairwise_distance(_flat(teacher))
    ds = ds / (ds.sum() / off).clip(min=1e-12)
    dt = dt / (dt.sum() / off).clip(min=1e-12)
    return _huber(ds - dt, 1.0).mean()


def _angles(e: Any) -> Any:
    diff = e.unsqueeze(0) - e.unsqueeze(1)  # [i, j] = e_j - e_i
    unit = F.normalize(diff, p=2, axis=2)
    return paddle.matmul(unit, unit, transpose_y=True)  # [i, j, k] = cos of angle j-i-k


@register_loss("rkd_angle", align="any")
def rkd_angle(student: Any, teacher: Any) -> Any:
    """Relational KD, angle term: cosines of the angles formed by every triplet of samples, smooth L1."""
    _check_batch(student, teacher, "rkd_angle")
    return _huber(_angles(_flat(student)) - _angles(_flat(teacher)), 1.0).mean()


@register_loss("dkd", align="exact")
def dkd(student: Any, teacher: Any, labels: Any = None, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> Any:
    """Decoupled KD (Zhao et al., 2022): ``alpha * TCKD + beta * NCKD``, both times T².

    TCKD compares the binary (target vs rest) probabilities, NCKD the distribution
    over the non-target classes. ``labels`` are the target classes ``[N]``; when
    absent the teacher's top class is used.
    """
    _same_shape(student, teacher, "dkd")
    if student.ndim != 2:
        raise ShapeMismatchError(f"dkd needs [N, classes] logits, got shape {list(student.shape)}")
    t = _check_temperature("dkd", temperature)
    num_classes = student.shape[1]
    if labels is None:
        labels = teacher.argmax(axis=1)
    if not isinstance(labels, paddle.Tensor):
        labels = paddle.to_tensor(labels)
    labels = labels.reshape([-1]).astype("int64")
    gt = F.one_hot(labels, num_classes).astype(student.dtype)
    ps = F.softmax(student / t, axis=1)
    pt = F.softmax(teacher / t, axis=1)
    bs = paddle.stack([(ps * gt).sum(axis=1), (ps * (1.0 - gt)).sum(axis=1)], axis=1).clip(min=1e-12)
    bt = paddle.stack([(pt * gt).sum(axis=1), (pt * (1.0 - gt)).sum(axis=1)], axis=1).clip(min=1e-12)
    tckd = (bt * (bt.log() - bs.log())).sum(axis=1).mean() * (t * t)
    log_ps2 = F.log_softmax(student / t - 1000.0 * gt, axis=1)
    log_pt2 = F.log_softmax(teacher / t - 1000.0 * gt, axis=1)
    nckd = (log_pt2.exp() * (log_pt2 - log_ps2)).sum(axis=1).mean() * (t * t)
    return alpha * tckd + beta * nckd
