import numpy as np
import pytest

from slim_core import ConfigError
from slim_nas import Choice, FloatRange, IntRange, SearchSpace, mobilenetv2_space, resnet_space


def make_space():
    return SearchSpace(
        {"width": Choice([0.5, 0.75, 1.0]), "kernel": Choice([3, 5, 7]), "depth": IntRange(2, 4), "lr": FloatRange(1e-4, 1e-1, log=True)}
    )


def test_sample_and_neighbor_stay_in_the_space():
    space = make_space()
    rng = np.random.default_rng(0)
    for _ in range(50):
        cfg = space.sample(rng)
        assert space.check(cfg) == cfg
        nb = space.neighbor(cfg, rng)
        assert space.check(nb) == nb
        assert nb != cfg


def test_size_grid_smallest_largest():
    space = SearchSpace({"width": Choice([0.5, 1.0]), "depth": IntRange(1, 5, step=2)})
    assert space.size == 6
    assert len(list(space.grid())) == 6
    assert space.smallest() == {"width": 0.5, "depth": 1}
    assert space.largest() == {"width": 1.0, "depth": 5}
    assert make_space().size == float("inf")


def test_yaml_round_trip(tmp_path):
    space = make_space()
    path = tmp_path / "space.yaml"
    space.to_yaml(path)
    assert SearchSpace.from_yaml(path) == space
    assert SearchSpace.from_dict(space.to_dict()) == space
    # a plain list reads as a Choice
    assert SearchSpace({"k": [3, 5]}) == SearchSpace({"k": Choice([3, 5])})


@pytest.mark.parametrize(
    "build, match",
    [
        pytest.param(lambda: SearchSpace({}), "empty", id="empty-space"),
        pytest.param(lambda: Choice([]), "empty", id="empty-choice"),
        pytest.param(lambda: IntRange(4, 2), "contradictory", id="int-low-above-high"),
        pytest.param(lambda: FloatRange(1.0, 0.5), "contradictory", id="float-low-above-high"),
        pytest.param(lambda: IntRange(0, 5, step=2), "multiple of step", id="int-step"),
        pytest.param(lambda: Choice([3, 3]), "duplicate", id="duplicate-choice"),
        pytest.param(lambda: Choice([[1, 2]]), "scalars", id="non-scalar-choice"),
        pytest.param(lambda: SearchSpace({"x": {"type": "normal"}}), "unknown type", id="unknown-type"),
        pytest.param(lambda: FloatRange(0.0, 1.0, log=True), "low > 0", id="log-from-zero"),
    ],
)
def test_bad_spaces_raise_config_error(build, match):
    with pytest.raises(ConfigError, match=match):
        build()


def test_check_rejects_mismatched_configs():
    space = make_space()
    with pytest.raises(ConfigError, match="missing"):
        space.check({"width": 0.5})
    cfg = space.largest()
    cfg["kernel"] = 4
    with pytest.raises(ConfigError, match="kernel=4"):
        space.check(cfg)


@pytest.mark.parametrize("factory", [mobilenetv2_space, resnet_space], ids=["mobilenetv2", "resnet"])
def test_shipped_spaces(factory):
    space = factory()
    assert space.size > 1
    assert all(name.startswith("stage") for name in space.names)
    assert SearchSpace.from_yaml(space.to_yaml()) == space
