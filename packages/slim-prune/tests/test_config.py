import pytest

from slim_core import ConfigError
from slim_prune import CRITERIA, PruneConfig


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ratio": 1.0}, "ratio"),
        ({"ratio": -0.1}, "ratio"),
        ({"flops_ratio": 1.2}, "flops_ratio"),
        ({"ratios": {"conv1": 1.0}}, "conv1"),
        ({"ratio": 0.3, "criterion": "l3"}, "criterion 'l3'"),
        ({"flops_ratio": 0.3, "params_ratio": 0.3}, "not both"),
        ({"flops_ratio": 0.3, "ratio": 0.3}, "global target"),
        ({}, "no target"),
        ({"ratio": 0.3, "round_to": 0}, "round_to"),
    ],
    ids=[
        "ratio-1",
        "ratio-neg",
        "flops-gt1",
        "layer-ratio-1",
        "unknown-criterion",
        "two-targets",
        "global-and-local",
        "no-target",
        "round-to-0",
    ],
)
def test_invalid_config_is_rejected(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PruneConfig(**kwargs)


def test_unknown_criterion_suggests_closest():
    with pytest.raises(ConfigError, match="did you mean 'fpgm'"):
        PruneConfig(ratio=0.2, criterion="fpmg")


def test_yaml_round_trip(tmp_path):
    cfg = PruneConfig(flops_ratio=0.5, criterion="fpgm", ignored_layers=["fc"], round_to=8)
    path = tmp_path / "prune.yaml"
    cfg.to_yaml(path)
    assert PruneConfig.from_yaml(path) == cfg
    with pytest.raises(ConfigError, match="did you mean 'criterion'"):
        PruneConfig.from_dict({"flops_ratio": 0.5, "criterium": "l1"})


def test_builtin_criteria_registered():
    assert {"l1", "l2", "fpgm", "bn_scale", "taylor"} <= set(CRITERIA.names())
