"""prune_ on model-zoo-style networks (hand-written attention, shuffle, split, slice, ghost concat):
the FLOPs target is reached, the pruned model equals a masked reference, and it saves and reloads."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from conftest import randomize_bn

from slim_core import ConfigError
from slim_core.graph.zoo import STYLE_MODELS, build_style_model
from slim_core.graph.zoo_nets import DeiTLike, PaddleClasAttention
from slim_prune import PruneConfig, apply_plan, plan_pruning, prune_
from slim_prune.prune import PrunePlan

NAMES = sorted(STYLE_MODELS)
X = [1, 3, 32, 32]


def _build(name):
    paddle.seed(0)
    model = build_style_model(name)
    randomize_bn(model)
    model.eval()
    return model


def _maskable(model, group) -> bool:
    """Zeroing the producers of a channel equals removing it, except through LayerNorm (its statistics
    see the zeros) and parameters added to the stream (position embeddings, class tokens)."""
    subs = dict(model.named_sublayers(include_self=True))
    return all(
        m.kind != "out"
        or (m.param in ("weight", "bias", "scale", "_mean", "_variance") and not isinstance(subs[m.layer], paddle.nn.LayerNorm))
        for m in group.members
    )


def _mask(model, plan: PrunePlan) -> None:
    subs = dict(model.named_sublayers(include_self=True))
    for gid, removed in plan.removed.items():
        g = plan.groups[gid]
        for m in g.members:
            if m.kind == "out" and m.param in ("weight", "bias", "scale"):
                p = getattr(subs[m.layer], m.param)
                arr = np.array(p.numpy())
                sl = [slice(None)] * arr.ndim
                sl[m.axis] = g.indices(m, removed)
                arr[tuple(sl)] = 0.0
                p.set_value(arr)


@pytest.mark.parametrize("name", NAMES)
def test_style_model_equals_masked_reference(name):
    model = _build(name)
    x = paddle.randn(X)
    plan = plan_pruning(model, PruneConfig(ratio=0.4), x)
    keep = {g: r for g, r in plan.removed.items() if _maskable(model, plan.groups[g])}
    assert len(keep) >= 3
    plan = PrunePlan(plan.groups, keep, {g: plan.names[g] for g in keep})
    ref = build_style_model(name)
    ref.set_state_dict(model.state_dict())
    ref.eval()
    _mask(ref, plan)
    apply_plan(model, plan, [x])
    np.testing.assert_allclose(model(x).numpy(), ref(x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_style_model_reaches_half_flops_and_reloads(name, tmp_path):
    model = _build(name)
    x = paddle.randn(X)
    res = prune_(model, PruneConfig(flops_ratio=0.5), x)
    assert res.flops_ratio == pytest.approx(0.5, abs=0.015)
    y = model(x).numpy()
    assert y.shape == (1, 10)
    paddle.jit.save(model, str(tmp_path / "m"), input_spec=[paddle.static.InputSpec(X, "float32")])
    loaded = paddle.jit.load(str(tmp_path / "m"))
    np.testing.assert_allclose(loaded(x).numpy(), y, rtol=1e-5, atol=1e-6)


def test_hand_written_attention_loses_whole_heads():
    """The attention layer's own num_heads follows: the pruned model still runs its hand-written reshape."""
    model = _build("deit_like")
    x = paddle.randn(X)
    prune_(model, PruneConfig(ratios={"blocks.0.attn.qkv": 0.5}), x)
    attn = model.blocks[0].attn
    assert attn.num_heads == 2 and attn.head_dim == 8
    assert list(attn.qkv.weight.shape) == [32, 48] and list(attn.proj.weight.shape) == [16, 32]
    assert model.blocks[1].attn.num_heads == 4
    assert model(x).shape == [1, 10]


def test_head_width_tied_to_input_width_is_left_unpruned_and_named():
    """PaddleClas' ViT attention computes head_dim = C // num_heads from the residual width: pruning heads
    (or the residual stream) alone breaks its reshape, the trial forward finds it, and the refusal names it."""
    paddle.seed(0)
    model = DeiTLike(attn_cls=PaddleClasAttention)
    model.eval()
    x = paddle.randn(X)
    before = model(x).numpy()
    with pytest.raises(ConfigError, match=r"left unpruned because pruning them alone makes the forward fail: .*blocks\.0\.attn\.qkv"):
        prune_(model, PruneConfig(flops_ratio=0.5), x)
    np.testing.assert_allclose(model(x).numpy(), before, rtol=1e-6)
    res = prune_(model, PruneConfig(flops_ratio=0.2), x)  # the FFNs alone still give 20%
    assert res.flops_ratio == pytest.approx(0.2, abs=0.015)
