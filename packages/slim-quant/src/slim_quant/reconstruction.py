"""Reconstruction PTQ: learned rounding of the weights (AdaRound, QDrop, BRECQ).

AdaRound (Nagel et al., 2020) replaces round-to-nearest by a learned up/down
choice per weight: a continuous variable ``alpha`` gives a soft rounding
``h(alpha) in [0, 1]`` that is optimised to reproduce the float output on
calibration data, with a regulariser that pushes ``h`` to 0 or 1 (its exponent
``beta`` is annealed from 20 to 2). The final codes are ``floor(w / step) + (alpha >= 0)``.

All three methods run that one optimisation (:func:`learn_rounding`) on a *unit*:
a sublayer of the model and the quantized layers inside it, run in ``"quant"``
mode (inputs of every quantized layer fake-quantized) with the soft-rounded
weights in place of the integer codes. They differ in the units and their inputs:

- ``"adaround"``: every quantized layer alone, its input taken from the float model;
- ``"qdrop"`` (Wei et al., 2022): every quantized layer alone, its input taken from the
  already quantized model (earlier layers keep their learned rounding), and during
  optimisation each activation value keeps its unquantized value with probability
  ``drop_prob``, which flattens the loss landscape and helps at low bit widths;
- ``"brecq"`` (Li et al., 2021): blocks (:func:`reconstruction_blocks`, e.g. ResNet's
  BasicBlock, MobileNetV2's InvertedResidual): the rounding of all quantized layers of a
  block is learned jointly so that the block output, with its inner activations
  fake-quantized, matches the float block's output on the float input. Layer-wise
  reconstruction cannot see how the rounding errors of consecutive layers compound (or
  cancel) through the nonlinearity between them; the block objective can. The block input
  comes from the already quantized model, as BRECQ prescribes, so each block also corrects
  the error accumulated before it. ``drop_prob`` applies QDrop inside the block (the QDrop
  paper builds on BRECQ's block reconstruction and reports it never hurts and helps most at
  low bits); ``drop_prob=0`` is plain BRECQ. Quantized layers outside every block are
  reconstructed alone, as in ``"qdrop"``.

Example:
    >>> rc = ReconstructionConfig(method="brecq", iters=200)
    >>> quantize_(model, PTQConfig(weight_bits=4, reconstruction=rc), calib)   # doctest: +SKIP
    >>> reconstruction_blocks(model)                                           # doctest: +SKIP
    {'conv1': ['conv1'], 'layer1.0': ['layer1.0.conv1', 'layer1.0.conv2'], ..., 'fc': ['fc']}
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import numpy as np
import paddle

from slim_core.errors import ConfigError
from slim_core.progress import progress
from slim_core.registry import closest
from slim_quant.config import ReconstructionConfig
from slim_quant.layers import QuantedLayer, quanted_layers
from slim_quant.primitives import channel_view, qmax, step

__all__ = ["reconstruct_", "learn_rounding", "adaround_layer", "reconstruction_blocks", "check_blocks"]

_ZETA, _GAMMA = 1.1, -0.1
_CONTAINERS = (paddle.nn.LayerList, paddle.nn.LayerDict)  # hold layers but are never called themselves


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def _call_order(model: Any, batch: dict[str, np.ndarray], names: Sequence[str]) -> list[str]:
    """Paths of the sublayers (``""``: the model) in the order they are first called on ``batch``."""
    from slim_quant.ptq import run_model

    order: dict[str, None] = {}
    handles = []
    for path, layer in [("", model), *model.named_sublayers()]:
        handles.append(layer.register_forward_pre_hook(lambda _l, _i, p=path: order.setdefault(p)))
    try:
        with paddle.no_grad():
            run_model(model, batch, names)
    finally:
        for h in handles:
            h.remove()
    return list(order)


def _check_known(block: str, paths: Sequence[str], model: Any) -> None:
    if block not in paths:
        hint = closest(block, paths)
        did = f" (did you mean {hint!r}?)" if hint else ""
        raise ConfigError(f"ReconstructionConfig.blocks names {block!r}, which is not a layer of {type(model).__name__}{did}")


def reconstruction_blocks(model: Any, blocks: Sequence[str] = (), called: Collection[str] | None = None) -> dict[str, list[str]]:
    """The units BRECQ reconstructs: ``{sublayer path: [paths of the QuantedLayers it holds]}``.

    Args:
        model: a model after ``quantize_`` (or during it: its QuantedLayer wrappers are in place).
        blocks: block paths; empty: found automatically, as the deepest sublayers that hold at least two
            QuantedLayers, each widened to its highest ancestor holding the same QuantedLayers (so
            MobileNetV2's ``InvertedResidual`` with its residual add is chosen rather than its inner ``conv``
            Sequential). ``""`` is the whole model.
        called: paths of the sublayers that run as layers in forward (default: all but LayerList/LayerDict);
            a block must be called, since its input is captured by a hook.

    Returns:
        Blocks and then every QuantedLayer outside them as a unit of its own, in definition order.

    Raises:
        ConfigError: a block that is no sublayer (with the closest path), or two blocks that overlap.

    Example:
        >>> reconstruction_blocks(qmodel)                              # doctest: +SKIP
        {'conv1': ['conv1'], 'layer1.0': ['layer1.0.conv1', 'layer1.0.conv2'], ...}
    """
    qpaths = list(quanted_layers(model))
    inside_q = tuple(q + "." for q in qpaths)
    paths = ["", *(p for p, _ in model.named_sublayers() if not p.startswith(inside_q))]
    layers = dict(model.named_sublayers())

    def holds(p: str) -> list[str]:
        return [q for q in qpaths if q == p or p == "" or q.startswith(p + ".")]

    def runs(p: str) -> bool:
        return p == "" or (p in called if called is not None else not isinstance(layers[p], _CONTAINERS))

    units: dict[str, list[str]] = {}
    if blocks:
        for b in blocks:
            _check_known(b, paths, model)
            if holds(b):
                units[b] = holds(b)
    else:
        cands = [p for p in paths if runs(p) and len(holds(p)) >= 2]
        for p in cands:
            if any(c.startswith(p + ".") or (p == "" and c) for c in cands):
                continue  # not the deepest
            while p and runs(_parent(p)) and holds(_parent(p)) == holds(p):
                p = _parent(p)
            units[p] = holds(p)
    owner: dict[str, str] = {}
    for b, qs in units.items():
        for q in qs:
            if q in owner:
                raise ConfigError(f"ReconstructionConfig.blocks {owner[q]!r} and {b!r} overlap (both hold {q!r})")
            owner[q] = b
    units.update({q: [q] for q in qpaths if q not in owner})
    return units


def check_blocks(
    model: Any, rc: ReconstructionConfig, quantized: Sequence[str], batch: dict[str, np.ndarray], names: Sequence[str]
) -> None:
    """Check ``rc.blocks`` against the float model before ``quantize_`` changes it.

    Every block must be a sublayer that runs in forward (found by one hooked forward pass on ``batch``),
    hold at least one of the layers to be ``quantized``, and not overlap another block.

    Raises:
        ConfigError: naming the block and what is wrong with it.
    """
    if rc.method != "brecq" or not rc.blocks:
        return
    paths = [p for p, _ in model.named_sublayers()]
    called = set(_call_order(model, batch, names))
    for b in rc.blocks:
        _check_known(b, paths, model)
        if b not in called:
            raise ConfigError(f"ReconstructionConfig.blocks names {b!r}, which never runs as a layer in forward (name the layers it holds)")
        if not any(q == b or q.startswith(b + ".") for q in quantized):
            raise ConfigError(f"ReconstructionConfig.blocks names {b!r}, which holds no layer to quantize")
        for other in rc.blocks:
            if other.startswith(b + "."):
                raise ConfigError(f"ReconstructionConfig.blocks {b!r} and {other!r} overlap")


def _capture(model: Any, unit: Any, batches: Sequence[dict[str, np.ndarray]], names: Sequence[str], mode: str) -> list[tuple[Any, ...]]:
    """The positional inputs of every call of ``unit`` while the model runs ``batches`` in ``mode``."""
    from slim_quant.ptq import run_model, set_mode

    got: list[tuple[Any, ...]] = []

    def hook(layer: Any, inputs: Any) -> None:
        got.append(tuple(a.detach() if isinstance(a, paddle.Tensor) else a for a in inputs))

    set_mode(model, mode)
    h = unit.register_forward_pre_hook(hook)
    try:
        with paddle.no_grad():
            for b in batches:
                run_model(model, b, names)
    finally:
        h.remove()
    return got


def _tensors(out: Any) -> list[Any]:
    if isinstance(out, paddle.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    return []


def _soft(alpha: Any) -> Any:
    return paddle.clip(paddle.nn.functional.sigmoid(alpha) * (_ZETA - _GAMMA) + _GAMMA, 0.0, 1.0)


def _rec_loss(out: Any, target: Sequence[Any]) -> Any:
    """Squared error summed over channels (axis 1, NCHW), averaged over samples and positions.

    As in the AdaRound and BRECQ reference code: per position, so that ``reg_weight`` weighs the same against
    a conv output of any spatial size (summing over positions too made the regulariser negligible on large
    feature maps, and the final hard rounding then strayed from the soft solution).
    """
    loss = 0.0
    for o, t in zip(_tensors(out), target):
        d = (o - t) ** 2
        loss = loss + (d.sum(axis=1).mean() if d.ndim > 1 else d.mean())
    return loss


class _Rounding:
    """AdaRound variables of one layer: ``codes = floor(w / step) + h(alpha)``, ``h`` soft while learning."""

    def __init__(self, q: QuantedLayer) -> None:
        w = q.inner.weight.detach()
        axis = q.axis if q.per_channel else None
        self.step = paddle.to_tensor(channel_view(step(q.w_threshold, q.weight_bits), w.ndim, axis))
        self.lim = float(qmax(q.weight_bits))
        self.floor = paddle.floor(w / self.step)
        self.nearest = paddle.clip(paddle.round(w / self.step), -self.lim, self.lim)
        rest = paddle.clip(w / self.step - self.floor, 0.01, 0.99)
        self.alpha = paddle.create_parameter(w.shape, "float32")
        self.alpha.set_value(-paddle.log((_ZETA - _GAMMA) / (rest - _GAMMA) - 1.0))  # h(alpha) = rest at the start

    def soft_weight(self, h: Any) -> Any:
        return paddle.clip(self.floor + h, -self.lim, self.lim) * self.step

    def learned(self) -> Any:
        return paddle.clip(self.floor + paddle.cast(self.alpha >= 0, "float32"), -self.lim, self.lim)

    @staticmethod
    def regulariser(h: Any, beta: float) -> Any:
        return (1.0 - paddle.abs(2.0 * h - 1.0) ** beta).sum()


@contextlib.contextmanager
def _weights(layers: Sequence[QuantedLayer], weights: Sequence[Any]) -> Iterator[None]:
    for q, w in zip(layers, weights):
        q.weight_override = w
    try:
        yield
    finally:
        for q in layers:
            q.weight_override = None


def learn_rounding(
    unit: Any,
    layers: Sequence[QuantedLayer],
    inputs: Sequence[tuple[Any, ...]],
    targets: Sequence[Any],
    rc: ReconstructionConfig,
    *,
    seed: int = 0,
) -> tuple[float, float]:
    """Learn the rounding of ``layers`` jointly so that ``unit``'s quantized output matches ``targets``.

    The one optimisation behind AdaRound, QDrop and BRECQ: Adam on the AdaRound variables of every layer,
    loss = output error + ``rc.reg_weight`` * rounding regulariser (after a 20 % warm-up, ``beta``
    annealed from 20 to 2). With ``rc.method`` ``"qdrop"`` or ``"brecq"`` each fake-quantized activation
    inside the unit keeps its unquantized value with probability ``rc.drop_prob`` during optimisation.
    The learned codes are kept only when they beat round-to-nearest on the same data.

    Args:
        unit: the sublayer run (a QuantedLayer itself for layer-wise reconstruction, or a block).
        layers: the QuantedLayers inside ``unit`` whose rounding is learned (set to ``"quant"`` mode;
            other QuantedLayers keep their mode).
        inputs: positional inputs of ``unit``, one tuple per calibration batch.
        targets: the float unit's outputs (tensor or tuple of tensors) for the same batches.
        rc: reconstruction settings.
        seed: batch sampling seed.

    Returns:
        ``(nearest, learned)``: the output error (squared, summed over channels, averaged over samples and
        positions) with round-to-nearest codes and with the codes kept (learned ones, or nearest when learning
        did not help).

    Example:
        >>> learn_rounding(block, [block.conv1, block.conv2], q_inputs, float_outputs, rc)   # doctest: +SKIP
        (0.83, 0.31)
    """
    rng = np.random.default_rng(seed)
    targets = [_tensors(t) for t in targets]
    for q in layers:
        q.mode = "quant"
    rounding = [_Rounding(q) for q in layers]
    opt = paddle.optimizer.Adam(learning_rate=rc.lr, parameters=[r.alpha for r in rounding])
    warmup = int(0.2 * rc.iters)

    def error(codes: Sequence[Any]) -> float:
        with paddle.no_grad(), _weights(layers, [c * r.step for c, r in zip(codes, rounding)]):
            return float(np.mean([float(_rec_loss(unit(*x), t)) for x, t in zip(inputs, targets)]))

    before = error([r.nearest for r in rounding])
    drop = rc.drop_prob if rc.method != "adaround" else 0.0
    for q in layers:
        q.drop_prob = drop
        q.train()  # QuantedLayer.quant_input drops only in training mode
    try:
        for it in range(rc.iters):
            i = int(rng.integers(len(inputs)))
            hs = [_soft(r.alpha) for r in rounding]
            with _weights(layers, [r.soft_weight(h) for r, h in zip(rounding, hs)]):
                loss = _rec_loss(unit(*inputs[i]), targets[i])
            if it >= warmup:
                beta = 2.0 + (20.0 - 2.0) * (1.0 - (it - warmup) / max(1, rc.iters - warmup))
                loss = loss + rc.reg_weight * sum(_Rounding.regulariser(h, beta) for h in hs)
            loss.backward()
            opt.step()
            opt.clear_grad()
    finally:
        for q in layers:
            q.drop_prob = 0.0
            q.eval()
        unit.clear_gradients()  # the biases and BN parameters on the path got gradients too
    codes = [r.learned() for r in rounding]
    after = error(codes)
    if after <= before:
        for q, c in zip(layers, codes):
            q.set_weight_codes(c.numpy())
    return before, min(before, after)


def adaround_layer(
    q: QuantedLayer, inputs: Sequence[Any], targets: Sequence[Any], rc: ReconstructionConfig, *, seed: int = 0
) -> tuple[float, float]:
    """Learn the rounding of one layer (:func:`learn_rounding` on the layer alone).

    Args:
        q: the wrapped layer (its weight thresholds must be set).
        inputs: the layer inputs (the float model's for AdaRound, the quantized model's for QDrop).
        targets: the float layer's outputs on the float inputs.
        rc: reconstruction settings.

    Returns:
        ``(nearest, learned)`` output errors, as :func:`learn_rounding`.
    """
    return learn_rounding(q, [q], [(x,) for x in inputs], targets, rc, seed=seed)


def reconstruct_(model: Any, batches: Sequence[dict[str, np.ndarray]], names: Sequence[str], rc: ReconstructionConfig) -> dict[str, float]:
    """Learned rounding for every QuantedLayer of ``model``, unit by unit in execution order.

    Args:
        model: the model inside ``quantize_`` (calibrated QuantedLayers).
        batches: calibration batches; the first ``rc.batches`` are the reconstruction data.
        names: model input names.
        rc: reconstruction settings.

    Returns:
        Metrics: ``<method>_output_mse_nearest`` / ``_learned`` (output errors summed over the units) and,
        for BRECQ, ``brecq_blocks`` (units of more than one layer).
    """
    from slim_quant.ptq import set_mode

    data = list(batches[: rc.batches])
    qlayers = quanted_layers(model)
    set_mode(model, "quant")
    order = _call_order(model, data[0], names)
    if rc.method == "brecq":
        units = reconstruction_blocks(model, rc.blocks, called=set(order))
    else:
        units = {n: [n] for n in qlayers}
    rank = {p: i for i, p in enumerate(order)}
    sublayers = {"": model, **dict(model.named_sublayers())}
    total_before = total_after = 0.0
    for path, held in progress(sorted(units.items(), key=lambda u: min(rank.get(q, len(rank)) for q in u[1])), desc=rc.method):
        unit = sublayers[path]
        fp_in = _capture(model, unit, data, names, "float")
        with paddle.no_grad():
            targets = [unit(*x) for x in fp_in]
        inputs = fp_in if rc.method == "adaround" else _capture(model, unit, data, names, "quant")
        set_mode(model, "quant")
        before, after = learn_rounding(unit, [qlayers[q] for q in held], inputs, targets, rc)
        total_before += before
        total_after += after
    set_mode(model, "quant")
    metrics = {f"{rc.method}_output_mse_nearest": total_before, f"{rc.method}_output_mse_learned": total_after}
    if rc.method == "brecq":
        metrics["brecq_blocks"] = float(sum(len(h) > 1 for h in units.values()))
    return metrics
