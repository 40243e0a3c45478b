"""Every registered loss against a value computed by hand in numpy."""

import numpy as np
import paddle
import pytest

from slim_core.errors import ConfigError
from slim_distill import LOSSES, ShapeMismatchError, register_loss

RNG = np.random.default_rng(0)


def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _huber(d, beta=1.0):
    a = np.abs(d)
    return np.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)


def np_kl(s, t, temperature=1.0):
    ps, pt = _softmax(s / temperature), _softmax(t / temperature)
    return (pt * (np.log(pt) - np.log(ps))).sum(-1).mean() * temperature**2


def np_cosine(s, t):
    s, t = s.reshape(len(s), -1), t.reshape(len(t), -1)
    cos = (s * t).sum(1) / (np.linalg.norm(s, axis=1) * np.linalg.norm(t, axis=1))
    return (1 - cos).mean()


def np_fsp(s, t):
    def g(a, b):
        n, c1, h, w = a.shape
        return np.einsum("nik,njk->nij", a.reshape(n, c1, h * w), b.reshape(n, b.shape[1], h * w)) / (h * w)

    return ((g(*s) - g(*t)) ** 2).mean()


def np_at(s, t, p=2.0):
    def att(x):
        a = (np.abs(x) ** p).mean(1).reshape(len(x), -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    return ((att(s) - att(t)) ** 2).mean()


def np_rkd_distance(s, t):
    def dist(e):
        e = e.reshape(len(e), -1)
        d = np.sqrt(((e[:, None] - e[None]) ** 2).sum(-1))
        n = len(e)
        return d / (d.sum() / (n * (n - 1)))

    return _huber(dist(s) - dist(t)).mean()


def np_rkd_angle(s, t):
    def ang(e):
        e = e.reshape(len(e), -1)
        diff = e[None] - e[:, None]
        norm = np.linalg.norm(diff, axis=2, keepdims=True)
        unit = diff / np.maximum(norm, 1e-12)
        return np.einsum("ijd,ikd->ijk", unit, unit)

    return _huber(ang(s) - ang(t)).mean()


def np_dkd(s, t, labels, alpha=1.0, beta=8.0, temperature=4.0):
    gt = np.eye(s.shape[1])[labels]
    ps, pt = _softmax(s / temperature), _softmax(t / temperature)
    bs = np.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = np.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = (bt * (np.log(bt) - np.log(bs))).sum(1).mean() * temperature**2
    # non-target classes only, renormalised among themselves
    mask = 1 - gt
    ps2 = ps * mask / (ps * mask).sum(1, keepdims=True)
    pt2 = pt * mask / (pt * mask).sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        nckd_terms = np.where(mask > 0, pt2 * (np.log(pt2) - np.log(ps2)), 0.0)
    nckd = nckd_terms.sum(1).mean() * temperature**2
    return alpha * tckd + beta * nckd


LOGITS = (RNG.normal(size=(6, 5)), RNG.normal(size=(6, 5)))
FEAT = (RNG.normal(size=(4, 3, 5, 5)), RNG.normal(size=(4, 3, 5, 5)))
EMB = (RNG.normal(size=(5, 7)), RNG.normal(size=(5, 11)))
LABELS = np.array([0, 1, 2, 3, 4, 0])

CASES = [
    ("kl", LOGITS, {}, lambda s, t: np_kl(s, t)),
    ("kl", LOGITS, {"temperature": 4.0}, lambda s, t: np_kl(s, t, 4.0)),
    ("mse", FEAT, {}, lambda s, t: ((s - t) ** 2).mean()),
    ("l2", FEAT, {}, lambda s, t: ((s - t) ** 2).mean()),
    ("l1", FEAT, {}, lambda s, t: np.abs(s - t).mean()),
    ("smooth_l1", FEAT, {}, lambda s, t: _huber(s - t).mean()),
    ("smooth_l1", FEAT, {"beta": 0.5}, lambda s, t: _huber(s - t, 0.5).mean()),
    ("cosine", FEAT, {}, np_cosine),
    ("at", (FEAT[0], RNG.normal(size=(4, 8, 5, 5))), {}, np_at),
    ("rkd_distance", EMB, {}, np_rkd_distance),
    ("rkd_angle", EMB, {}, np_rkd_angle),
    ("dkd", LOGITS, {}, lambda s, t: np_dkd(s, t, np.argmax(t, 1))),
    ("dkd", LOGITS, {"alpha": 0.5, "beta": 2.0, "temperature": 2.0}, lambda s, t: np_dkd(s, t, np.argmax(t, 1), 0.5, 2.0, 2.0)),
]


def _t(a):
    return paddle.to_tensor(np.asarray(a, dtype="float32"))


@pytest.mark.parametrize(
    "name,data,kwargs,expected", CASES, ids=[f"{c[0]}-{'-'.join(f'{k}{v}' for k, v in c[2].items()) or 'default'}" for c in CASES]
)
def test_loss_matches_numpy(name, data, kwargs, expected):
    s, t = data
    got = float(LOSSES.get(name).fn(_t(s), _t(t), **kwargs))
    want = float(expected(s.astype("float32").astype("float64"), t.astype("float32").astype("float64")))
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_dkd_uses_given_labels():
    s, t = LOGITS
    got = float(LOSSES.get("dkd").fn(_t(s), _t(t), labels=paddle.to_tensor(LABELS)))
    assert got == pytest.approx(np_dkd(s, t, LABELS), rel=1e-4)
    assert got != pytest.approx(np_dkd(s, t, np.argmax(t, 1)), rel=1e-3)


def test_fsp_matches_numpy_and_pools_mismatched_grids():
    s = [RNG.normal(size=(2, 3, 4, 4)), RNG.normal(size=(2, 5, 4, 4))]
    t = [RNG.normal(size=(2, 3, 4, 4)), RNG.normal(size=(2, 5, 4, 4))]
    got = float(LOSSES.get("fsp").fn([_t(a) for a in s], [_t(a) for a in t]))
    assert got == pytest.approx(np_fsp(s, t), rel=1e-4)
    # a second map at half the resolution is average-pooled onto the coarser grid
    coarse = RNG.normal(size=(2, 5, 2, 2))
    fine = [s[0], np.repeat(np.repeat(coarse, 2, axis=2), 2, axis=3)]
    pooled = s[0].reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5))
    got2 = float(LOSSES.get("fsp").fn([_t(a) for a in fine], [_t(pooled), _t(coarse)]))
    assert got2 == pytest.approx(0.0, abs=1e-9)


def test_kl_is_zero_for_identical_logits_and_scales_with_t_squared():
    s, t = LOGITS
    assert float(LOSSES.get("kl").fn(_t(s), _t(s), temperature=3.0)) == pytest.approx(0.0, abs=1e-6)
    raw = np_kl(s / 2.0, t / 2.0) * 4.0
    assert float(LOSSES.get("kl").fn(_t(s), _t(t), temperature=2.0)) == pytest.approx(raw, rel=1e-4)


@pytest.mark.parametrize("name", ["mse", "l1", "cosine", "kl", "dkd"])
def test_shape_mismatch_is_a_clear_error(name):
    with pytest.raises(ShapeMismatchError, match=r"\[6, 5\].*\[6, 4\]"):
        LOSSES.get(name).fn(_t(LOGITS[0]), _t(LOGITS[1][:, :4]))


@pytest.mark.parametrize("temperature", [0.0, -1.0], ids=["zero", "negative"])
def test_temperature_must_be_positive_when_called_directly(temperature):
    with pytest.raises(ConfigError, match="temperature"):
        LOSSES.get("kl").fn(_t(LOGITS[0]), _t(LOGITS[1]), temperature=temperature)


def test_rkd_needs_two_samples():
    with pytest.raises(ShapeMismatchError, match="at least 2"):
        LOSSES.get("rkd_angle").fn(_t(EMB[0][:1]), _t(EMB[1][:1]))


def test_gradients_are_finite_for_relational_losses():
    s = paddle.to_tensor(EMB[0].astype("float32"), stop_gradient=False)
    loss = LOSSES.get("rkd_distance").fn(s, _t(EMB[1])) + LOSSES.get("rkd_angle").fn(s, _t(EMB[1]))
    loss.backward()
    assert np.isfinite(s.grad.numpy()).all() and np.abs(s.grad.numpy()).sum() > 0


def test_register_custom_loss_and_reject_duplicates():
    @register_loss("test_scaled_l1", align="adapt")
    def scaled_l1(s, t, scale: float = 2.0):
        return scale * (s - t).abs().mean()

    try:
        assert float(LOSSES.get("test_scaled_l1").fn(_t([1.0]), _t([0.0]))) == pytest.approx(2.0)
        assert LOSSES.get("test_scaled_l1").param_names() == ["scale"]
        with pytest.raises(ConfigError, match="already registered"):
            register_loss("test_scaled_l1")(scaled_l1)
    finally:
        LOSSES.pop("test_scaled_l1")


def test_unknown_loss_lists_known_ones():
    with pytest.raises(ConfigError, match="did you mean 'mse'"):
        LOSSES.get("mes")
