"""PaddleSlim ACT recipes: translated key by key, with what is not supported listed."""

import pytest

from slim_auto import load_any_recipe, translate_act
from slim_core import ConfigError

ACT_QAT = """\
Global:
  model_dir: ./MobileNetV1_infer
  model_filename: inference.pdmodel
  params_filename: inference.pdiparams
  batch_size: 32
Distillation:
  alpha: 1.0
  loss: soft_label
  node: [softmax_0.tmp_0]
QuantAware:
  use_pact: true
  activation_bits: 8
  weight_bits: 8
  weight_quantize_type: channel_wise_abs_max
  onnx_format: true
  quantize_op_types: [conv2d, depthwise_conv2d]
TrainConfig:
  epochs: 1
  eval_iter: 500
  learning_rate:
    type: CosineAnnealingDecay
    learning_rate: 0.015
    T_max: 8000
  optimizer_builder:
    optimizer:
      type: Momentum
    weight_decay: 0.00002
  origin_metric: 0.7098
  target_metric: 0.70
"""

ACT_PRUNE_PTQ = """\
ChannelPrune:
  pruned_ratio: 0.25
  criterion: geometry_median
  prune_params_name: [conv2_1_sep_weights]
UnstructurePrune:
  prune_strategy: gmp
  prune_mode: ratio
  ratio: 0.75
QuantPost:
  algo: KL
  batch_nums: 10
  hist_percent: 0.999
  bias_correct: false
HyperParameterOptimization:
  ptq_algo: [KL, hist, avg, mse]
  max_quant_count: 3
Unknown:
  a: 1
"""


def _fields(kind):
    return None  # check the raw mapping, independent of the installed packages


def test_qat_recipe_with_distillation_and_train_config():
    t = translate_act(ACT_QAT, config_fields=_fields)
    r = t.recipe
    assert [s.kind for s in r.stages] == ["qat"]
    qat = r.stages[0].settings
    assert qat["activation_quanter"] == "pact" and qat["weight_bits"] == 8 and qat["weight_quanter"] == "abs_max"
    assert r.train.distill == {"logits": {"weight": 1.0, "loss": "kl"}}
    assert r.train.epochs == 1 and r.train.eval_interval == 500 and r.train.learning_rate == 0.015
    assert r.train.lr_schedule == "cosine" and r.train.optimizer == "momentum" and r.train.weight_decay == 2e-5
    assert r.target.min_metric == 0.70
    assert any(m.startswith("TrainConfig.target_metric -> target.min_metric") for m in t.mapped)
    unsupported = "\n".join(t.unsupported)
    for key in (
        "Global.model_dir",
        "Distillation.node",
        "QuantAware.onnx_format",
        "QuantAware.quantize_op_types",
        "TrainConfig.origin_metric",
    ):
        assert key in unsupported, key


def test_prune_sparsity_ptq_and_hpo():
    t = translate_act(ACT_PRUNE_PTQ, config_fields=_fields)
    kinds = [s.kind for s in t.recipe.stages]
    assert kinds == ["prune", "sparsity", "ptq"]
    prune, sparsity, ptq = t.recipe.stages
    assert prune.settings == {"ratio": 0.25, "criterion": "fpgm"}
    assert sparsity.settings == {"ratio": 0.75}
    assert any("UnstructurePrune.prune_strategy" in u for u in t.unsupported)
    assert ptq.settings["calibrator"] == "kl" and ptq.settings["calib_batches"] == 10 and ptq.settings["percentile"] == 99.9
    assert ptq.search == {"calibrator": ["kl", "percentile", "avg", "mse"]} and ptq.max_trials == 3
    assert any("Unknown: unknown ACT section" in u for u in t.unsupported)
    assert any("ChannelPrune.prune_params_name" in u for u in t.unsupported)


def test_with_the_installed_configs():
    t = translate_act(ACT_QAT)  # channel-wise abs-max weights are slim QAT's per-channel abs_max quanter
    assert t.recipe.stages[0].settings["weight_quanter"] == "abs_max"
    assert not any("weight_granularity" in u for u in t.unsupported)
    assert t.recipe.stages[0].settings["activation_quanter"] == "pact"


def test_weight_quantize_type_is_never_guessed():
    t = translate_act({"QuantPost": {"weight_quantize_type": "abs_max"}, "QuantAware": {"weight_quantize_type": "abs_max"}})
    ptq = next(s for s in t.recipe.stages if s.kind == "ptq")
    qat = next(s for s in t.recipe.stages if s.kind == "qat")
    assert ptq.settings["weight_granularity"] == "per_tensor"
    assert "weight_quanter" not in qat.settings  # slim QAT weights are per-channel: no per-tensor equivalent
    assert any("QuantAware.weight_quantize_type='abs_max': no equivalent value" in u for u in t.unsupported)
    t = translate_act({"QuantPost": {"weight_quantize_type": "foo"}})
    assert "weight_granularity" not in t.recipe.stages[0].settings
    assert any("QuantPost.weight_quantize_type='foo'" in u for u in t.unsupported)


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("QuantAware", "use_pact", "maybe"),
        ("QuantPost", "bias_correct", "yes"),
        ("QuantPost", "batch_nums", "ten"),
        ("QuantPost", "hist_percent", float("nan")),
        ("ChannelPrune", "pruned_ratio", "half"),
        ("TrainConfig", "epochs", 1.5),
        ("TrainConfig", "target_metric", "high"),
        ("HyperParameterOptimization", "batch_num", "10"),
    ],
    ids=lambda v: str(v),
)
def test_wrong_value_types_name_the_key(section, key, value):
    with pytest.raises(ConfigError, match=f"ACT recipe: {section}.{key}="):
        translate_act({section: {key: value}}, config_fields=_fields)


def test_empty_sections_are_listed_not_dropped():
    t = translate_act("Distillation:\nHyperParameterOptimization:\nQuantPost:\n", config_fields=_fields)
    assert [s.kind for s in t.recipe.stages] == ["distill", "ptq"]
    assert t.recipe.stages[0].settings == {"logits": {}}
    assert any(m.startswith("Distillation (empty section) -> distill.logits") for m in t.mapped)
    assert any(u.startswith("HyperParameterOptimization: empty section") for u in t.unsupported)
    t = translate_act("Distillation:\nQuantAware:\n", config_fields=_fields)
    assert [s.kind for s in t.recipe.stages] == ["qat"] and t.recipe.train.distill == {"logits": {}}


def test_keys_missing_from_installed_configs_are_reported():
    t = translate_act({"ChannelPrune": {"pruned_ratio": 0.3}}, config_fields=lambda kind: ["criterion"])
    assert t.recipe.stages[0].settings == {}
    assert any("prune.ratio=0.3: the installed prune config has no such setting" in u for u in t.unsupported)
    assert not any("pruned_ratio" in m for m in t.mapped)


def test_unknown_value_is_unsupported_not_invented():
    t = translate_act({"QuantPost": {"algo": "magic"}}, config_fields=_fields)
    assert "calibrator" not in t.recipe.stages[0].settings
    assert any("QuantPost.algo='magic'" in u for u in t.unsupported)


def test_asp_is_two_four_sparsity():
    t = translate_act({"ASPPrune": {"prune_params_name": ["fc_0.w_0"]}}, config_fields=_fields)
    assert t.recipe.stages[0].kind == "sparsity" and t.recipe.stages[0].settings == {"n": 2, "m": 4}


def test_not_an_act_recipe():
    with pytest.raises(ConfigError, match="not a PaddleSlim ACT recipe"):
        translate_act({"stages": []})


def test_markdown_lists_both_sides():
    md = translate_act(ACT_QAT, config_fields=_fields).to_markdown()
    assert "Mapped:" in md and "Not supported" in md and "QuantAware.use_pact" in md


def test_load_any_recipe_detects_act(tmp_path):
    path = tmp_path / "act.yaml"
    path.write_text("QuantPost:\n  algo: avg\n")
    recipe, translation = load_any_recipe(str(path))
    assert translation is not None and recipe.stages[0].kind == "ptq"
    recipe, translation = load_any_recipe("stages: [{ptq: {}}]\n")
    assert translation is None


def test_train_distill_is_checked():
    from slim_auto.recipe import TrainConfig

    assert TrainConfig(distill={"logits": {}}).distill == {"logits": {}}
    with pytest.raises(ConfigError, match="TrainConfig.distill: DistillConfig: unknown key 'logit'"):
        TrainConfig.from_dict({"distill": {"logit": {}}})
