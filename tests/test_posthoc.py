"""Tests of longtail.posthoc: adjust_logits and tune_tau."""

import keras
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from longtail.errors import ConfigError
from longtail.posthoc import adjust_logits, tune_tau

PRIORS = [0.6, 0.25, 0.1, 0.05]


def test_adjust_logits_numpy_follows_the_formula():
    z = np.random.RandomState(0).randn(6, 4).astype("float32")
    for tau in (0.0, 0.5, 1.0, 2.0):
        out = adjust_logits(z, PRIORS, tau=tau)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
        np.testing.assert_allclose(out, z - tau * np.log(PRIORS), rtol=1e-6)
    # Counts work as priors: the same shift up to a constant per row.
    from_counts = adjust_logits(z.astype("float64"), [120, 50, 20, 10])
    diff = from_counts - adjust_logits(z.astype("float64"), PRIORS)
    np.testing.assert_allclose(diff, np.full_like(diff, -np.log(200)), rtol=1e-12)
    assert adjust_logits([[1, 2, 3, 4]], PRIORS).dtype == np.float64  # lists, ints


def test_adjust_logits_backend_tensor_stays_a_tensor():
    z = np.random.RandomState(1).randn(3, 4).astype("float32")
    out = adjust_logits(keras.ops.convert_to_tensor(z), PRIORS, tau=1.5)
    assert not isinstance(out, np.ndarray) and keras.ops.is_tensor(out)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out),
                               z - 1.5 * np.log(PRIORS), rtol=1e-6)


def test_adjust_logits_zero_prior_gets_the_smallest_prior():
    z = np.zeros((1, 4))
    with pytest.warns(UserWarning, match="zero for class"):
        out = adjust_logits(z, [0.7, 0.2, 0.1, 0.0])
    assert np.all(np.isfinite(out))
    assert out[0, 3] == pytest.approx(out[0, 2])  # as the rarest observed class


@pytest.mark.parametrize("call,message", [
    (lambda: adjust_logits(np.zeros((2, 4)), PRIORS, tau=-1), r"`tau` must be >= 0; got -1"),
    (lambda: adjust_logits(np.zeros((2, 3)), PRIORS),
     r"`priors` has 4 entries but the logits have 3 classes"),
    (lambda: adjust_logits(np.zeros((2, 4)), [0, 0, 0, 0]), r"`priors` must not be all zero"),
    (lambda: tune_tau(np.zeros((2, 4)), [0, 1], PRIORS, taus=[-0.5, 1.0]),
     r"`taus` must all be finite and >= 0"),
    (lambda: tune_tau(np.zeros((2, 4)), [0, 1], PRIORS, taus=[]), r"`taus` must be a non-empty"),
    (lambda: tune_tau(np.zeros((3, 4)), [0, 1], PRIORS), r"`logits` must have shape \(n, k\)"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def biased_validation_set(n=2000, seed=0):
    """Balanced validation data scored by a model that learned the priors:
    logits = log p(x | y) + log prior(y), so tau = 1 undoes the bias."""
    rng = np.random.RandomState(seed)
    k = len(PRIORS)
    y = rng.randint(0, k, n)
    class_log_lik = rng.randn(n, k) * 1.5
    class_log_lik[np.arange(n), y] += 2.0
    return class_log_lik + np.log(PRIORS), y


def test_tune_tau_scores_are_sklearn_balanced_accuracy():
    logits, y = biased_validation_set()
    taus = np.linspace(0, 2, 21)
    best, scores = tune_tau(logits, y, PRIORS)
    want = [balanced_accuracy_score(y, np.argmax(logits - t * np.log(PRIORS), -1))
            for t in taus]
    np.testing.assert_allclose(scores, want, rtol=1e-12)
    assert best == taus[int(np.argmax(want))]
    assert 0.7 <= best <= 1.3  # the bias of this data is undone near tau = 1
    assert scores.max() > scores[0] + 0.05  # and undoing it is worth it


def test_tune_tau_accepts_one_hot_labels_tensors_and_custom_taus():
    logits, y = biased_validation_set(n=300, seed=1)
    best, scores = tune_tau(logits, y, PRIORS, taus=[0.0, 1.0])
    best2, scores2 = tune_tau(keras.ops.convert_to_tensor(logits.astype("float32")),
                              np.eye(len(PRIORS))[y], PRIORS, taus=[0.0, 1.0])
    assert scores.shape == (2,) and best == best2 == 1.0
    np.testing.assert_allclose(scores, scores2)


def test_tune_tau_ties_go_to_the_first_candidate():
    logits = np.array([[1.0, 0.0], [1.0, 0.5], [0.0, 1.0]])
    best, scores = tune_tau(logits, [0, 1, 1], [0.8, 0.2])
    assert best == pytest.approx(0.4) and scores.max() == 1.0
    assert np.sum(scores == 1.0) > 1  # several taus tie
    best, _ = tune_tau(logits, [0, 1, 1], [0.8, 0.2], taus=[0.6, 0.5, 0.4])
    assert best == 0.6


def test_tune_tau_on_many_float32_classes_is_sklearn_balanced_accuracy():
    from longtail.metrics import SPARSE_CONFUSION_ABOVE

    k, n = SPARSE_CONFUSION_ABOVE + 200, 2500  # several row blocks; no dense k x k matrix
    rng = np.random.default_rng(0)
    priors = rng.integers(1, 500, k) / 1.0
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + np.log(priors / priors.sum())
    logits[np.arange(n), y] += 3.0
    logits = logits.astype(np.float32)
    taus = [0.0, 0.5, 1.0]
    best, scores = tune_tau(logits, y, priors, taus=taus)
    ref = logits.astype(np.float64)
    want = [balanced_accuracy_score(y, np.argmax(ref - t * np.log(priors / priors.sum()), -1))
            for t in taus]
    np.testing.assert_allclose(scores, want, rtol=1e-12)
    assert best == taus[int(np.argmax(want))]
