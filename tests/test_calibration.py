import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from longtail.calibration import (calibration_summary, classwise_ece, fit_temperature, nll,
                                  reliability)
from longtail.errors import DataError


def test_ece_equals_a_hand_computation():
    probs = np.array([[0.95, 0.05], [0.70, 0.30], [0.30, 0.70], [0.55, 0.45]])
    y = np.array([0, 1, 1, 0])
    # class 0, 2 bins: [0, .5) holds 0.30 (outcome 0); [.5, 1] holds .95, .70, .55
    # (outcomes 1, 0, 1): |0 - .30| + |2 - 2.20| = .50, over 4 samples = .125.
    # class 1 mirrors class 0 (p1 = 1 - p0, outcome flipped): the same .125.
    np.testing.assert_allclose(classwise_ece(probs, y, bins=2), [0.125, 0.125])
    # 4 bins, class 0: bins [.25,.5): .30 (0) -> .30; [.5,.75): .70 (0), .55 (1) -> .25;
    # [.75, 1]: .95 (1) -> .05; total .60 / 4 = .15
    assert classwise_ece(probs, y, bins=4)[0] == pytest.approx(0.15)


def test_ece_matches_a_loop_reference():
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(size=(500, 4)) * 2, axis=1)
    y = rng.integers(0, 4, 500)
    edges = np.linspace(0, 1, 11)
    for c in range(4):
        total = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            inside = (probs[:, c] >= lo) & ((probs[:, c] < hi) | (hi == 1.0))
            if inside.any():
                total += inside.sum() * abs((y[inside] == c).mean() - probs[inside, c].mean())
        assert classwise_ece(probs, y, bins=10)[c] == pytest.approx(total / 500)


def _overconfident(n=6000, k=4, scale=3.0, seed=0):
    """Labels drawn from softmax(z); the model reports scale * z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 1.5
    p = softmax(z, axis=1)
    y = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    return z * scale, y


def test_temperature_scaling_lowers_validation_nll_and_recovers_the_scale():
    logits, y = _overconfident()
    t = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(logits, y, t) < nll(logits, y)
    assert nll(logits, y, t) <= min(nll(logits, y, t * 1.05), nll(logits, y, t / 1.05))
    # nll against a direct formula
    ref = -log_softmax(logits / 2.0, axis=1)[np.arange(y.size), y].mean()
    assert nll(logits, y, 2.0) == pytest.approx(ref)


def test_summary_before_and_after():
    logits, y = _overconfident(seed=1)
    val_logits, val_y = _overconfident(seed=2)
    groups = np.array(["many", "many", "medium", "few"])
    s = calibration_summary(logits, y, groups, val_logits=val_logits, val_true=val_y)
    assert s["temperature"] == pytest.approx(fit_temperature(val_logits, val_y))
    assert s["val_nll"]["after"] < s["val_nll"]["before"]
    before = classwise_ece(softmax(logits, axis=1), y, 15)
    np.testing.assert_allclose(s["ece_per_class"]["before"], before)
    assert s["ece_groups"]["before"]["many"] == pytest.approx(before[:2].mean())
    assert np.mean(s["ece_per_class"]["after"]) < np.mean(before)
    head = s["reliability"]["head"]["before"]
    assert sum(head["count"]) == 2 * y.size
    assert set(s["reliability"]) == {"head", "tail"}
    assert calibration_summary(logits, y, groups)["temperature"] is None


def test_reliability_bins_are_means():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8]])
    r = reliability(probs, [0, 1, 1], [0], bins=2)
    assert r["count"] == [1, 2]
    np.testing.assert_allclose(r["confidence"], [0.2, 0.85])
    np.testing.assert_allclose(r["frequency"], [0.0, 0.5])


def test_bad_shapes_are_named():
    with pytest.raises(DataError, match="shape"):
        classwise_ece(np.ones((3, 2)) / 2, [0, 1])
    with pytest.raises(DataError, match="0..1"):
        nll(np.zeros((2, 2)), [0, 2])


def test_bias_temperature_recovers_scale_and_prior_offsets():
    from longtail.calibration import fit_bias_temperature

    logits, y = _overconfident(n=8000, seed=3)
    prior = np.array([0.1, 0.2, 0.3, 0.4])
    # the same labels, but the model is blind to a class prior: draw labels from
    # softmax(z + log prior) while the model reports 3 z
    rng = np.random.default_rng(4)
    p = softmax(logits / 3 + np.log(prior), axis=1)
    y = (rng.random((len(p), 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    t, b = fit_bias_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.1)
    np.testing.assert_allclose(b, np.log(prior) - np.log(prior).mean(), atol=0.1)
    assert nll(logits / t + b, y) < nll(logits, y, fit_temperature(logits, y))


def test_bias_temperature_on_float32_blocks_meets_its_optimality_conditions():
    from longtail.calibration import fit_bias_temperature

    # 30,000 x 50 float32 logits: two row blocks of the NLL pass
    rng = np.random.default_rng(5)
    z = rng.normal(size=(30000, 50)) * 1.5
    prior = rng.dirichlet(np.ones(50) * 2)
    p = softmax(z + np.log(prior), axis=1)
    y = (rng.random((len(p), 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    t, b = fit_bias_temperature((2 * z).astype(np.float32), y)
    fitted = softmax(2 * z.astype(np.float32).astype(np.float64) / t + b, axis=1)
    # zero gradient, by a float64 whole-array reference: expected counts per class equal
    # the observed ones (biases), and the expected true logit equals the observed (T)
    np.testing.assert_allclose(fitted.sum(axis=0), np.bincount(y, minlength=50), atol=0.5)
    zf = 2 * z.astype(np.float32).astype(np.float64)
    assert (fitted * zf).sum() == pytest.approx(zf[np.arange(y.size), y].sum(), rel=1e-3)
    assert t == pytest.approx(2.0, rel=0.05)
