"""Reconstruction PTQ: learned rounding of the weights (AdaRound, QDrop).

AdaRound (Nagel et al., 2020) replaces round-to-nearest by a learned up/down
choice per weight: a continuous variable ``alpha`` gives a soft rounding
``h(alpha) in [0, 1]`` that is optimised, layer by layer, to reproduce the float
layer's output on calibration data, with a regulariser that pushes ``h`` to 0 or
1 (its exponent ``beta`` is annealed from 20 to 2). The final codes are
``floor(w / step) + (alpha >= 0)``.

QDrop (Wei et al., 2022) feeds each layer the input produced by the already
quantized model and, during optimisation, keeps every input value in float with
probability ``drop_prob``, which flattens the loss landscape and helps at low bit widths.

Block-wise reconstruction (BRECQ) is not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import paddle

from slim_core.progress import progress
from slim_quant.config import ReconstructionConfig
from slim_quant.layers import QuantedLayer, quanted_layers
from slim_quant.primitives import channel_view, qmax, step
from slim_quant.primitives import fake_quant as _fake_quant

__all__ = ["reconstruct_", "adaround_layer"]

_ZETA, _GAMMA = 1.1, -0.1


def _capture(model: Any, q: QuantedLayer, batches: Sequence[dict[str, np.ndarray]], names: Sequence[str], mode: str) -> list[Any]:
    from slim_quant.ptq import run_model, set_mode

    got: list[Any] = []

    def hook(layer: Any, inputs: Any) -> None:
        got.append(inputs[0].detach())

    set_mode(model, mode)
    h = q.register_forward_pre_hook(hook)
    try:
        with paddle.no_grad():
            for b in batches:
                run_model(model, b, names)
    finally:
        h.remove()
    return got


def _soft(alpha: Any) -> Any:
    return paddle.clip(paddle.nn.functional.sigmoid(alpha) * (_ZETA - _GAMMA) + _GAMMA, 0.0, 1.0)


def _rec_loss(out: Any, target: Any) -> Any:
    d = (out - target) ** 2
    return d.reshape([d.shape[0], -1]).sum(axis=1).mean()


def adaround_layer(
    q: QuantedLayer,
    inputs: Sequence[Any],
    targets: Sequence[Any],
    rc: ReconstructionConfig,
    *,
    float_inputs: Sequence[Any] | None = None,
    seed: int = 0,
) -> tuple[float, float]:
    """Learn the rounding of one layer's weight; returns the output error (nearest, learned).

    Args:
        q: the wrapped layer (its weight thresholds must be set).
        inputs: the layer inputs the quantized model sees (float model's for AdaRound).
        targets: the float layer's outputs on the float inputs.
        rc: reconstruction settings.
        float_inputs: QDrop only: the float inputs mixed in with probability ``rc.drop_prob``.
    """
    rng = np.random.default_rng(seed)
    w = q.inner.weight.detach()
    axis = q.axis if q.per_channel else None
    s = paddle.to_tensor(channel_view(step(q.w_threshold, q.weight_bits), w.ndim, axis))
    lim = float(qmax(q.weight_bits))
    w_floor = paddle.floor(w / s)
    rest = paddle.clip(w / s - w_floor, 0.01, 0.99)
    alpha = paddle.create_parameter(w.shape, "float32")
    alpha.set_value(-paddle.log((_ZETA - _GAMMA) / (rest - _GAMMA) - 1.0))
    opt = paddle.optimizer.Adam(learning_rate=rc.lr, parameters=[alpha])
    warmup = int(0.2 * rc.iters)

    def layer_input(i: int) -> Any:
        x = _fake_quant(inputs[i], q.act_threshold, q.act_bits) if q.act_threshold is not None else inputs[i]
        if float_inputs is not None and rc.drop_prob > 0.0:
            keep = paddle.cast(paddle.rand(x.shape) < rc.drop_prob, x.dtype)
            x = keep * float_inputs[i] + (1.0 - keep) * x
        return x

    def error(codes: Any) -> float:
        with paddle.no_grad():
            wq = paddle.clip(codes, -lim, lim) * s
            qin = [_fake_quant(x, q.act_threshold, q.act_bits) if q.act_threshold is not None else x for x in inputs]
            return float(np.mean([float(_rec_loss(q.forward_with_weight(x, wq), t)) for x, t in zip(qin, targets)]))

    before = error(paddle.round(w / s))
    for it in range(rc.iters):
        i = int(rng.integers(len(inputs)))
        h = _soft(alpha)
        w_soft = paddle.clip(w_floor + h, -lim, lim) * s
        loss = _rec_loss(q.forward_with_weight(layer_input(i), w_soft), targets[i])
        if it >= warmup:
            beta = 2.0 + (20.0 - 2.0) * (1.0 - (it - warmup) / max(1, rc.iters - warmup))
            loss = loss + rc.reg_weight * (1.0 - paddle.abs(2.0 * h - 1.0) ** beta).sum()
        loss.backward()
        opt.step()
        opt.clear_grad()
    codes = w_floor + paddle.cast(alpha >= 0, "float32")
    after = error(codes)
    if after <= before:
        q.set_weight_codes(paddle.clip(codes, -lim, lim).numpy())
    return before, min(before, after)


def reconstruct_(model: Any, batches: Sequence[dict[str, np.ndarray]], names: Sequence[str], rc: ReconstructionConfig) -> dict[str, float]:
    """Learned rounding for every QuantedLayer of ``model`` in order; returns summed output errors before/after."""
    from slim_quant.ptq import set_mode

    data = list(batches[: rc.batches])
    total_before = total_after = 0.0
    for _, q in progress(list(quanted_layers(model).items()), desc=f"{rc.method}"):
        fp_in = _capture(model, q, data, names, "float")
        with paddle.no_grad():
            targets = [q.inner(x) for x in fp_in]
        if rc.method == "qdrop":
            q_in = _capture(model, q, data, names, "quant")
            before, after = adaround_layer(q, q_in, targets, rc, float_inputs=fp_in)
        else:
            before, after = adaround_layer(q, fp_in, targets, rc)
        total_before += before
        total_after += after
    set_mode(model, "quant")
    return {f"{rc.method}_output_mse_nearest": total_before, f"{rc.method}_output_mse_learned": total_after}
