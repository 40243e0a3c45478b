"""fold_bn_ and merge_ finish or leave the model exactly as it was (issue 18, item 9)."""

from __future__ import annotations

import paddle
import pytest
from conftest import randomize_bn
from test_rep import VGGish

import slim_core.bn_fold as bn_fold
import slim_deploy.rep as rep
from slim_core.testing import assert_model_unchanged, clas_style_net, model_fingerprint
from slim_deploy import RepConfig, fold_bn_, merge_, reparameterize


def _interrupt_on_second(monkeypatch, module, name):
    real = getattr(module, name)
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first change is already made
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


def test_fold_bn_interrupted_after_the_first_pair_is_undone(monkeypatch):
    model = clas_style_net()
    randomize_bn(model)
    model.eval()
    before = model_fingerprint(model)
    calls = _interrupt_on_second(monkeypatch, bn_fold, "_fold_pair")
    with pytest.raises(KeyboardInterrupt):
        fold_bn_(model, [None, 3, 32, 32])
    assert len(calls) == 2
    assert_model_unchanged(before, model)


def test_merge_interrupted_after_the_first_block_is_undone(monkeypatch):
    model = reparameterize(VGGish(), RepConfig(block="repvgg"), [None, 3, 16, 16])
    model.eval()
    before = model_fingerprint(model)
    calls = _interrupt_on_second(monkeypatch, rep, "set_sublayer")
    with pytest.raises(KeyboardInterrupt):
        merge_(model)
    assert len(calls) == 2
    assert_model_unchanged(before, model)
    model(paddle.randn([1, 3, 16, 16]))
