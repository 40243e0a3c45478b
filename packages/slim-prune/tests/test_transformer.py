import numpy as np
import paddle
import pytest
from conftest import assert_same_state, state_arrays

from slim_core import ConfigError
from slim_prune import TransformerPruneConfig, prune_heads_, prune_transformer_

nn = paddle.nn


def _encoder(d=32, heads=4, ff=64, layers=2, norm_first=False):
    return nn.TransformerEncoder(nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, normalize_before=norm_first), layers)


def _mask_reference(model, result):
    """Zero the removed heads' value projections and the removed FFN neurons in the unpruned model."""
    subs = dict(model.named_sublayers())
    for name, heads in result.heads.items():
        attn = subs[name]
        hd = attn.head_dim
        cols = [h * hd + j for h in heads for j in range(hd)]
        for p in (attn.v_proj.weight, attn.v_proj.bias):
            arr = p.numpy()
            arr[..., cols] = 0.0
            p.set_value(arr)
    for name, neurons in result.neurons.items():
        layer = subs[name]
        for p in (layer.linear1.weight, layer.linear1.bias):
            arr = p.numpy()
            arr[..., neurons] = 0.0
            p.set_value(arr)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
@pytest.mark.parametrize("criterion", ["l1", "taylor"])
def test_head_and_ffn_pruning_matches_masked_reference(norm_first, criterion, tmp_path):
    model = _encoder(norm_first=norm_first)
    model.eval()
    ref = _encoder(norm_first=norm_first)
    ref.set_state_dict(model.state_dict())
    ref.eval()
    x = paddle.randn([2, 5, 32])
    res = prune_transformer_(
        model, TransformerPruneConfig(head_ratio=0.5, ffn_ratio=0.5, criterion=criterion), loss_fn=lambda m: (m(x) ** 2).mean()
    )
    assert all(len(h) == 2 for h in res.heads.values()) and len(res.heads) == 2
    assert all(len(n) == 32 for n in res.neurons.values())
    assert model.layers[0].self_attn.num_heads == 2
    assert res.params_after < res.params_before
    _mask_reference(ref, res)
    np.testing.assert_allclose(model(x).numpy(), ref(x).numpy(), rtol=1e-4, atol=1e-5)
    paddle.jit.save(model, str(tmp_path / "enc"), input_spec=[paddle.static.InputSpec([None, 5, 32])])
    assert np.allclose(paddle.jit.load(str(tmp_path / "enc"))(x).numpy(), model(x).numpy(), atol=1e-5)


def test_prune_heads_of_a_standalone_attention_and_train():
    attn = nn.MultiHeadAttention(24, 6)
    prune_heads_(attn, [0, 3, 5])
    assert attn.num_heads == 3 and attn.q_proj.weight.shape == [24, 12] and attn.out_proj.weight.shape == [12, 24]
    opt = paddle.optimizer.Adam(parameters=attn.parameters())
    q = paddle.randn([2, 4, 24])
    loss = attn(q).mean()
    loss.backward()
    opt.step()


def test_bad_transformer_input_leaves_model_unchanged():
    model = _encoder()
    before = state_arrays(model)
    with pytest.raises(ConfigError, match="all 4 heads"):
        prune_heads_(model.layers[0].self_attn, [0, 1, 2, 3])
    with pytest.raises(ConfigError, match="out of range"):
        prune_heads_(model.layers[0].self_attn, [7])
    with pytest.raises(ConfigError, match="head_ratio"):
        TransformerPruneConfig(head_ratio=1.0)
    with pytest.raises(ConfigError, match="no layer named"):
        prune_transformer_(model, TransformerPruneConfig(head_ratio=0.5, ignored_layers=["layers.9"]))
    with pytest.raises(ConfigError, match="needs loss_fn"):
        prune_transformer_(model, TransformerPruneConfig(head_ratio=0.5, criterion="taylor"))
    assert_same_state(before, model)
    with pytest.raises(ConfigError, match="no paddle.nn.MultiHeadAttention"):
        prune_transformer_(nn.Linear(3, 3), TransformerPruneConfig(head_ratio=0.5))


def test_ignored_layers_keep_their_heads():
    model = _encoder()
    res = prune_transformer_(model, TransformerPruneConfig(head_ratio=0.5, ignored_layers=["layers.1"]))
    assert list(res.heads) == ["layers.0.self_attn"]
    assert model.layers[1].self_attn.num_heads == 4


def test_graph_driven_prune_handles_attention_heads():
    """prune_ on the channel graph removes whole heads (group channel = one head) and FFN neurons."""
    from slim_prune import PruneConfig, prune_

    model = _encoder()
    model.eval()
    x = paddle.randn([2, 5, 32])
    res = prune_(model, PruneConfig(flops_ratio=0.4), x)
    attn = model.layers[0].self_attn
    assert attn.q_proj.weight.shape[1] == attn.num_heads * attn.head_dim == attn.out_proj.weight.shape[0]
    assert res.flops_ratio == pytest.approx(0.4, rel=0.1)
    assert model(x).shape == [2, 5, 32]
