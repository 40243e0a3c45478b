import importlib

import pytest

from slim_core import ConfigError
from slim_nas import Choice, Constraint, InfeasibleConstraintError, IntRange, MissingExtraError, SearchSpace, StorageError, search

search_module = importlib.import_module("slim_nas.search")

SPACE = SearchSpace({"x": IntRange(0, 40), "y": Choice([0.25, 0.5, 0.75, 1.0]), "k": Choice([3, 5, 7])})


def bowl(cfg):
    """Optimum 0 at x=27, y=0.75, k=5."""
    return -((cfg["x"] - 27) ** 2) / 40 - 10 * (cfg["y"] - 0.75) ** 2 - abs(cfg["k"] - 5)


@pytest.mark.parametrize("strategy", ["sa", "random", "tpe"])
def test_single_objective_strategies_find_the_optimum_region(strategy):
    result = search(bowl, SPACE, strategy, n_trials=60, seed=1)
    assert bowl(result.best) > -1.0, result.best
    assert abs(result.best["x"] - 27) <= 5
    assert len(result.trials) == 60
    assert result.pareto[0].config == result.best


def test_nsga2_finds_a_pareto_front_of_accuracy_vs_cost():
    # "accuracy" grows with x then saturates; "cost" grows with x: the front trades one for the other
    def objective(cfg):
        return min(cfg["x"], 30) / 30 - 0.1 * abs(cfg["k"] - 5), cfg["x"] * cfg["y"]

    result = search(objective, SPACE, "nsga2", n_trials=80, seed=0, directions=["maximize", "minimize"])
    assert len(result.pareto) >= 3
    costs = [t.values[1] for t in result.pareto]
    accs = [t.values[0] for t in result.pareto]
    # sorted by accuracy (best first): cost must fall along the front
    assert costs == sorted(costs, reverse=True) and accs == sorted(accs, reverse=True)
    assert result.best_values[0] >= 0.95
    assert result.best["k"] == 5 and result.best_values[1] <= 15  # the true best trade-off costs 7.5 (x=30, y=0.25)


def test_sa_and_random_work_without_optuna(monkeypatch):
    monkeypatch.setattr(search_module, "_optuna_available", lambda: False)
    for strategy in ("sa", "random"):
        result = search(bowl, SPACE, strategy, n_trials=40, seed=0)
        assert result.study is None
        assert len({tuple(sorted(t.config.items())) for t in result.trials}) == 40  # no config evaluated twice
        assert bowl(result.best) > -3


def test_tpe_without_optuna_names_the_extra(monkeypatch):
    import slim_nas.errors as errors

    def missing(what):
        raise MissingExtraError(f"{what} needs Optuna; install it with: pip install 'slim-nas[optuna]'")

    monkeypatch.setattr("slim_nas.strategies.require_optuna", missing)
    assert errors.MissingExtraError is MissingExtraError
    with pytest.raises(MissingExtraError, match=r"slim-nas\[optuna\]"):
        search(bowl, SPACE, "tpe", n_trials=5)


def test_constraints_are_respected_and_recorded():
    cost = Constraint("cost", lambda c: c["x"] * c["y"], max=10)
    result = search(bowl, SPACE, "sa", n_trials=40, seed=0, constraints=[cost])
    assert result.best["x"] * result.best["y"] <= 10
    done = [t for t in result.trials if t.state == "complete"]
    assert done and all(t.attrs["constraints"]["cost"] <= 10 for t in done)


def test_impossible_constraint_reports_closest_value():
    cost = Constraint("flops", lambda c: 100 + c["x"], max=50)
    with pytest.raises(InfeasibleConstraintError, match=r"flops <= 50 cannot be met: the closest achievable value found is 100"):
        search(bowl, SPACE, "random", n_trials=5, constraints=[cost])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        pytest.param({"strategy": "nsga"}, ConfigError, "did you mean .nsga2", id="unknown-strategy"),
        pytest.param({"strategy": "sa", "directions": ["maximize", "minimize"]}, ConfigError, "one objective", id="sa-multi"),
        pytest.param({"directions": "max"}, ConfigError, "not allowed", id="bad-direction"),
        pytest.param({"n_trials": 0}, ConfigError, "positive", id="zero-trials"),
        pytest.param({"storage": "sqlite:////no/such/dir/s.db"}, StorageError, "does not exist", id="missing-dir"),
        pytest.param({"storage": "nosuchdb://user@host/db"}, StorageError, "cannot open storage", id="unknown-dialect"),
        pytest.param({"storage": "search.db"}, StorageError, "not a database URL", id="not-a-url"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = {"strategy": "random", "n_trials": 3, **kwargs}
    with pytest.raises(error, match=match):
        search(bowl, SPACE, **args)


def test_resume_continues_the_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    calls = []

    def interrupted(cfg):
        if len(calls) == 6:
            raise KeyboardInterrupt
        calls.append(cfg)
        return bowl(cfg)

    with pytest.raises(KeyboardInterrupt):
        search(interrupted, SPACE, "sa", n_trials=20, storage=url, study_name="s", seed=0)
    first = search(bowl, SPACE, "sa", n_trials=12, storage=url, study_name="s", seed=0)
    done = [t for t in first.trials if t.state == "complete"]
    assert len(done) == 12  # 6 before the interruption, the interrupted one is run again
    assert [t.config for t in done[:6]] == calls
    second = search(bowl, SPACE, "sa", n_trials=30, storage=url, study_name="s", seed=0)
    assert len([t for t in second.trials if t.state == "complete"]) == 30
    assert bowl(second.best) >= bowl(first.best)
    with pytest.raises(ConfigError, match="another search space"):
        search(bowl, SearchSpace({"x": IntRange(0, 3)}), "sa", n_trials=31, storage=url, study_name="s")


def test_pareto_plot(tmp_path):
    pytest.importorskip("matplotlib")
    result = search(lambda c: (c["x"], -c["x"] * c["y"]), SPACE, "random", n_trials=20, seed=0, directions=["maximize", "maximize"])
    out = result.plot_pareto(tmp_path / "front.png", labels=["accuracy", "neg cost"])
    assert out.stat().st_size > 1000


def test_pareto_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    import sys

    result = search(lambda c: (c["x"], c["y"]), SPACE, "random", n_trials=5, seed=0, directions=["maximize", "maximize"])
    for mod in ("matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, mod, None)  # makes the import fail like an absent package
    with pytest.raises(MissingExtraError, match=r"slim-nas\[plot\]"):
        result.plot_pareto(tmp_path / "x.png")


def test_flops_and_params_constraints_on_supernet_subnets():
    import slim_analysis

    if not hasattr(slim_analysis, "flops"):
        pytest.skip("slim_analysis.flops is not published yet")
    from slim_nas import OFAResNet, max_flops, max_params

    # two subnets only: slim_analysis.flops traces a program per call (seconds on a loaded machine)
    net = OFAResNet(10, 1, 8, stages=((8, 1, 1),), stem_channels=8, head_channels=16, width_choices=(0.5, 1.0), expand_choices=(1.0,))
    space = net.space()
    assert space.size == 2
    flops = max_flops(1e12, net.export, [1, 1, 8, 8])
    big, small = flops.value(space.largest()), flops.value(space.smallest())
    assert small < big
    limit = (small + big) / 2
    result = search(
        lambda c: c["stage0.width"],
        space,
        "random",
        n_trials=2,
        seed=0,
        constraints=[max_flops(limit, net.export, [1, 1, 8, 8]), max_params(1e9, net.export)],
    )
    assert result.best == space.smallest()
    assert result.trials[0].attrs["constraints"]["flops"] == small
    with pytest.raises(InfeasibleConstraintError, match=f"closest achievable value found is {small:g}"):
        search(lambda c: 0.0, space, "random", n_trials=2, constraints=[Constraint("flops", flops.fn, max=small / 2)])


def test_measured_latency_constraint():
    import slim_analysis

    if not hasattr(slim_analysis, "latency"):
        pytest.skip("slim_analysis.latency is not published yet")
    from slim_nas import OFAResNet, max_latency

    net = OFAResNet(10, 1, 8, stages=((8, 1, 1),), stem_channels=8, head_channels=16, width_choices=(0.5, 1.0), expand_choices=(1.0,))
    lat = max_latency(1e6, net.export, [1, 1, 8, 8], repeats=3, warmup=1)
    ms = lat.value(net.space().largest())
    assert 0 < ms < 1e4
    with pytest.raises(InfeasibleConstraintError, match="latency_ms <= 1e-06 cannot be met"):
        search(lambda c: 0.0, net.space(), "random", n_trials=2, constraints=[Constraint("latency_ms", lat.fn, max=1e-6)])
