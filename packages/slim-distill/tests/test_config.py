"""DistillConfig: the dict form of the issue, YAML round trip, validation errors."""

import pytest

from slim_core.errors import ConfigError
from slim_distill import DistillConfig, DMLConfig, LogitsConfig, PairConfig

ISSUE_FORM = {
    "logits": {"loss": "kl", "temperature": 4.0, "weight": 1.0},
    "pairs": [{"student": "features.6", "teacher": "layer2", "loss": "mse", "weight": 1.0}],
}


def test_issue_dict_form_round_trips_through_yaml(tmp_path):
    cfg = DistillConfig.from_dict(ISSUE_FORM)
    assert cfg.logits == LogitsConfig(loss="kl", temperature=4.0, weight=1.0)
    assert cfg.pairs == [PairConfig(student="features.6", teacher="layer2", loss="mse", weight=1.0)]
    path = tmp_path / "distill.yaml"
    cfg.to_yaml(path)
    again = DistillConfig.from_yaml(path)
    assert again == cfg
    assert DistillConfig.from_dict(again.to_dict()) == cfg
    # the compact form stays readable: every key of the issue's form comes back with its value
    d = again.to_dict()
    assert {k: d["logits"][k] for k in ISSUE_FORM["logits"]} == ISSUE_FORM["logits"]
    assert {k: d["pairs"][0][k] for k in ISSUE_FORM["pairs"][0]} == ISSUE_FORM["pairs"][0]


def test_fsp_pair_and_params_round_trip():
    cfg = DistillConfig(
        logits=LogitsConfig(loss="dkd", params={"alpha": 1.0, "beta": 4.0}),
        pairs=[PairConfig(student=["layer1", "layer2"], teacher=["layer1", "layer2"], loss="fsp", weight=0.5)],
    )
    assert DistillConfig.from_yaml(cfg.to_yaml()) == cfg


@pytest.mark.parametrize("temperature", [0.0, -2.0, float("nan")], ids=["zero", "negative", "nan"])
def test_temperature_must_be_positive(temperature):
    with pytest.raises(ConfigError, match="temperature"):
        DistillConfig.from_dict({"logits": {"loss": "kl", "temperature": temperature}})
    with pytest.raises(ConfigError, match="temperature"):
        DMLConfig(temperature=temperature)


@pytest.mark.parametrize(
    "data,match",
    [
        ({}, "nothing to distill"),
        ({"logits": {"loss": "mes"}}, "did you mean 'mse'"),
        ({"logits": {"loss": "kl", "temprature": 2.0}}, "did you mean 'temperature'"),
        ({"logits": {"loss": "mse", "temperature": 2.0}}, "takes no temperature"),
        ({"logits": {"loss": "dkd", "params": {"alfa": 1.0}}}, "did you mean 'alpha'"),
        ({"logits": {"loss": "kl", "weight": -1.0}}, "weight"),
        ({"logits": {"loss": "fsp"}}, "pairs of layers"),
        ({"pairs": [{"student": "a", "teacher": "b", "loss": "fsp"}]}, "list of 2 names"),
        ({"pairs": [{"student": ["a", "b"], "teacher": ["c", "d"], "loss": "mse"}]}, "single name"),
        ({"pairs": [{"student": "layer*", "teacher": "layer2"}]}, "both sides as patterns"),
        ({"pairs": [{"student": "a", "teacher": "b", "student_io": "inputs"}]}, "did you mean 'input'"),
        ({"pairs": [{"student": "", "teacher": "b"}]}, "empty"),
    ],
    ids=["empty", "unknown-loss", "typo-key", "temperature-on-mse", "unknown-param", "negative-weight", "fsp-on-logits",
         "fsp-one-name", "mse-two-names", "half-pattern", "bad-io", "empty-name"],
)  # fmt: skip
def test_bad_config_is_a_clear_error(data, match):
    with pytest.raises(ConfigError, match=match):
        DistillConfig.from_dict(data)
