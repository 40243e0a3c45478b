"""In-place pruning verbs finish or leave the model exactly as it was (issue 18, item 9)."""

import numpy as np
import paddle
import pytest
from conftest import ConvBNNet

from slim_core import DataError
from slim_core.testing import assert_model_unchanged, clas_style_net, model_fingerprint
from slim_prune import NMConfig, PruneConfig, SparsityConfig, TransformerPruneConfig, prune_, prune_transformer_, sparsify_, sparsify_nm_

X32 = [1, 3, 32, 32]


class StepFailed(Exception):
    pass


@pytest.mark.parametrize("build", [ConvBNNet, clas_style_net], ids=["convbn-residual", "clas-se-layerlist"])
@pytest.mark.parametrize("exc", [StepFailed, KeyboardInterrupt], ids=["step-raises", "ctrl-c"])
def test_multi_step_prune_is_undone_when_a_later_step_fails(build, exc):
    model = build()
    before = model_fingerprint(model)
    seen = []

    def step_fn(m, step):
        seen.append([int(p.shape[0]) for p in m.parameters()])  # the model is pruned at this point
        if step == 2:
            raise exc("stop")

    with pytest.raises(exc):
        prune_(model, PruneConfig(flops_ratio=0.5, steps=3), paddle.randn(X32), step_fn=step_fn)
    assert len(seen) == 2 and seen[0] != [int(p.shape[0]) for p in model.parameters()]
    assert_model_unchanged(before, model)
    model(paddle.randn(X32))  # still runs


def test_failing_loss_fn_in_a_later_step_restores_the_model():
    model = ConvBNNet()
    before = model_fingerprint(model)
    x = paddle.randn(X32)
    calls = []

    def loss_fn(m):
        calls.append(1)
        if len(calls) == 2:  # step 1 pruned; step 2 scores with this loss
            raise RuntimeError("loss blew up")
        return m(x).mean()

    with pytest.raises(RuntimeError, match="loss blew up"):
        prune_(model, PruneConfig(flops_ratio=0.5, steps=2, criterion="taylor"), x, loss_fn=loss_fn)
    assert_model_unchanged(before, model)


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_example_inputs_are_a_data_error_before_pruning(bad):
    model = ConvBNNet()
    before = model_fingerprint(model)
    x = np.random.randn(*X32).astype("float32")
    x[0, 0, 0, 0] = bad
    with pytest.raises(DataError, match=r"example_inputs\[0\]"):
        prune_(model, PruneConfig(flops_ratio=0.5), paddle.to_tensor(x))
    assert_model_unchanged(before, model)


@pytest.mark.parametrize(
    "verb",
    [
        lambda m: sparsify_(m, SparsityConfig(ratio=0.5)),
        lambda m: sparsify_nm_(m, NMConfig()),
    ],
    ids=["sparsify", "sparsify-nm"],
)
def test_sparsity_verbs_are_undone_on_ctrl_c(verb, monkeypatch):
    import slim_prune.sparsity as sp

    model = clas_style_net()
    before = model_fingerprint(model)
    real = sp.SparseMasks.__init__

    def init_then_interrupt(self, *a, **kw):
        real(self, *a, **kw)  # the masks are applied to the weights here
        raise KeyboardInterrupt

    monkeypatch.setattr(sp.SparseMasks, "__init__", init_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        verb(model)
    assert_model_unchanged(before, model)


def test_transformer_prune_is_undone_on_ctrl_c_after_some_layers_were_cut(monkeypatch):
    import slim_prune.transformer as tr

    paddle.seed(0)
    enc = paddle.nn.TransformerEncoder(paddle.nn.TransformerEncoderLayer(16, 4, 32), 2)
    before = model_fingerprint(enc)
    real = tr.prune_ffn_
    calls = []

    def interrupt_second(layer, neurons):
        calls.append(1)
        if len(calls) == 2:  # every head and the first FFN are already pruned
            raise KeyboardInterrupt
        return real(layer, neurons)

    monkeypatch.setattr(tr, "prune_ffn_", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        prune_transformer_(enc, TransformerPruneConfig(head_ratio=0.5, ffn_ratio=0.5))
    assert len(calls) == 2
    assert_model_unchanged(before, enc)
