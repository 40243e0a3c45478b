"""Recipe parsing: the YAML form, round trips, and errors that name the line and the key."""

import pytest

from slim_auto import Recipe, StageSpec, TargetConfig, TrainConfig, load_recipe
from slim_core import ConfigError

GOOD = """\
stages:
  - prune: {flops_ratio: 0.3, criterion: l1}
  - distill: {logits: {loss: kl, temperature: 4.0}}
    train: {epochs: 2}
  - ptq: {calibrator: kl}
    search: {calibrator: [kl, mse]}
    max_trials: 2
train:
  epochs: 1
  optimizer: momentum
  learning_rate: 0.01
target:
  max_metric_drop: 0.005
  min_speedup: 1.5
"""


def test_parses_stages_train_and_target():
    r = load_recipe(GOOD)
    assert [s.kind for s in r.stages] == ["prune", "distill", "ptq"]
    assert r.stages[0].settings == {"flops_ratio": 0.3, "criterion": "l1"}
    assert r.stages[2].search == {"calibrator": ["kl", "mse"]} and r.stages[2].max_trials == 2
    assert r.train.optimizer == "momentum" and r.target.min_speedup == 1.5
    assert r.train_for(r.stages[1]).epochs == 2 and r.train_for(r.stages[1]).optimizer == "momentum"
    assert r.train_for(r.stages[0]) == r.train


def test_yaml_round_trip_and_dict_round_trip(tmp_path):
    r = load_recipe(GOOD)
    again = load_recipe(r.to_recipe_yaml())
    assert again.to_dict() == r.to_dict()
    assert Recipe.from_dict(r.to_dict()) == r
    path = tmp_path / "r.yaml"
    path.write_text(GOOD)
    assert load_recipe(str(path)).fingerprint() == r.fingerprint()


def test_fingerprint_changes_with_stages():
    a = load_recipe("stages: [{ptq: {calibrator: kl}}]")
    b = load_recipe("stages: [{ptq: {calibrator: mse}}]")
    assert a.fingerprint() != b.fingerprint()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("stages:\n  - prun: {}\n", r"line 2, key 'stages\[0\]\.prun'.*did you mean 'prune'"),
        ("stages: [{ptq: {}}]\ntrian: {}\n", r"line 2, key 'trian'.*did you mean 'train'"),
        (
            "stages:\n  - ptq: {}\ntrain:\n  epochs: 1\n  lerning_rate: 0.1\n",
            r"line 5, key 'train\.lerning_rate'.*did you mean 'learning_rate'",
        ),
        ("target:\n  max_drop: 0.1\n", r"line 2, key 'target\.max_drop'.*did you mean 'max_metric_drop'"),
        ("stages: [ptq: {a: 1}\n", r"malformed YAML.*line 2"),
        ("target:\n  max_metric_drop: -1\n", r"line 2, key 'target\.max_metric_drop'.*outside"),
        ("stages:\n  - ptq: {}\n    train: {epoch: 3}\n", r"line 3, key 'stages\[0\]\.train\.epoch'.*did you mean 'epochs'"),
        ("stages:\n  - ptq: 3\n", r"line 2.*settings of stage 'ptq' must be a mapping"),
        ("stages: {ptq: {}}\n", r"line 1, key 'stages': must be a list"),
        ("QuantPost: {algo: KL}\n", r"PaddleSlim ACT recipe"),
        ("- ptq\n", r"a recipe is a mapping"),
        ("stages:\n  - ptq: {}\n    search: {calibrator: []}\n", r"line 2.*search.calibrator is an empty list"),
    ],
    ids=[
        "unknown-stage",
        "unknown-top-key",
        "unknown-train-key",
        "unknown-target-key",
        "yaml-syntax",
        "bad-target-value",
        "unknown-stage-train-key",
        "settings-not-mapping",
        "stages-not-list",
        "act-recipe",
        "not-a-mapping",
        "empty-search",
    ],
)
def test_malformed_recipes_name_line_and_key(text, expected):
    with pytest.raises(ConfigError, match=expected):
        load_recipe(text)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(str(tmp_path / "nope.yaml"))


def test_train_and_target_validation():
    with pytest.raises(ConfigError, match="epochs or steps"):
        TrainConfig(epochs=0, steps=0)
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig.from_dict({"optimizer": "lion"})
    with pytest.raises(ConfigError, match="min_speedup"):
        TargetConfig(min_speedup=0)
    assert "speedup >= 2x" in TargetConfig(min_speedup=2.0).describe()


def test_stage_spec_dict_form_is_accepted():
    r = load_recipe({"stages": [StageSpec(kind="ptq", settings={"calibrator": "kl"}).to_dict()]})
    assert r.stages[0].settings == {"calibrator": "kl"}


def test_allow_keys_lets_cli_keys_through():
    r = load_recipe("model: m.json\nstages: [{ptq: {}}]\n", allow_keys=("model",))
    assert r.stages[0].kind == "ptq"
    with pytest.raises(ConfigError, match="'model'"):
        load_recipe("model: m.json\n")
