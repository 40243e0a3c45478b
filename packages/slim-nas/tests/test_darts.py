import numpy as np
import paddle
import pytest

from slim_core import ConfigError
from slim_nas import DartsConfig, DartsNetwork, DartsSupernet, darts_search, derive_genotype
from slim_nas.darts import check_genotype


@pytest.mark.parametrize(
    "cfg",
    [
        pytest.param(DartsConfig(steps=5, channels=8, n_nodes=3, n_cells=2, reduce_after=(0,), arch_lr=3e-2), id="2cells-reduce-3nodes"),
        pytest.param(
            DartsConfig(steps=5, channels=4, n_nodes=2, n_cells=1, ops=("none", "skip", "sepconv3x3", "avgpool3x3"), arch_lr=3e-2),
            id="1cell-2nodes",
        ),
    ],
)
def test_darts_search_derives_a_valid_cell_that_trains(cfg, digits, tmp_path):
    batches, xt, _ = digits
    result = darts_search(batches[:4], batches[4:], cfg)
    assert check_genotype(result.genotype) == result.genotype
    assert len(result.genotype) == cfg.n_nodes
    for j, node in enumerate(result.genotype):
        assert len(node) == min(2, j + 1)
        assert all(op in cfg.ops and op != "none" and 0 <= i <= j for op, i in node)
    assert result.alpha.shape == (cfg.n_nodes * (cfg.n_nodes + 1) // 2, len(cfg.ops))
    np.testing.assert_allclose(result.alpha.sum(axis=1), 1.0, rtol=1e-5)
    # alpha moved away from its near-uniform start
    assert result.alpha.std() > 1e-3
    net = DartsNetwork(result.genotype, in_channels=1, channels=cfg.channels, n_cells=cfg.n_cells, reduce_after=cfg.reduce_after)
    out = net(paddle.to_tensor(xt[:4]))
    assert out.shape == [4, 10]
    loss = out.mean()
    loss.backward()
    net.eval()
    paddle.jit.save(net, str(tmp_path / "cell"), input_spec=[paddle.static.InputSpec([None, 1, 8, 8], "float32", "x")])


def test_arch_parameters_are_separate_from_weights():
    net = DartsSupernet(DartsConfig(channels=4, n_nodes=2, n_cells=1), in_channels=1)
    weight_ids = {id(p) for p in net.parameters()}
    arch = net.arch_parameters()
    assert len(arch) == 1 and id(arch[0]) not in weight_ids
    assert arch[0].shape == [3, 7]


def test_derive_genotype_picks_the_strongest_edges_and_skips_none():
    ops = ("none", "skip", "conv3x3")
    alpha = np.zeros((6, 3))
    alpha[0] = [9, 1, 3]  # node 0 <- state 0: 'none' dominates, 'conv3x3' is the best real op
    alpha[1] = [0, 5, 0]  # node 1 <- state 0: skip
    alpha[2] = [0, 0, 1]  # node 1 <- state 1: weaker conv
    alpha[3] = [0, 0, 0]
    alpha[4] = [0, 0, 8]  # node 2 <- state 1: strong conv
    alpha[5] = [0, 6, 0]  # node 2 <- state 2: skip
    assert derive_genotype(alpha, ops, n_nodes=3) == [[("conv3x3", 0)], [("skip", 0), ("conv3x3", 1)], [("conv3x3", 1), ("skip", 2)]]


@pytest.mark.parametrize(
    "genotype, match",
    [
        pytest.param([], "non-empty", id="empty"),
        pytest.param([[("skip", 1)]], "earlier state", id="future-input"),
        pytest.param([[("none", 0)]], "none", id="none-op"),
        pytest.param([[("conv9x9", 0)]], "unknown DARTS operation", id="unknown-op"),
    ],
)
def test_invalid_genotypes(genotype, match):
    with pytest.raises(ConfigError, match=match):
        check_genotype(genotype)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param({"ops": ("none",)}, "besides 'none'", id="only-none"),
        pytest.param({"ops": ("skip", "skip")}, "duplicates", id="dup-ops"),
        pytest.param({"reduce_after": (5,)}, "reduce_after", id="bad-reduce"),
    ],
)
def test_bad_darts_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DartsConfig(**kwargs)
