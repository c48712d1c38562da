import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from longtail.errors import ConfigError, DataError
from longtail.intervals import (BootstrapOptions, bootstrap_intervals, parse_requirement,
                                resampled_counts, stratified_indices, verdict)
from longtail.metrics import compute_metrics

K = 5
COUNTS = [400, 150, 60, 15, 5]


def _data(seed=0, n=300, accuracy=0.7, k=K, never=()):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < accuracy, y, rng.integers(0, k, n))
    for c in never:
        pred[pred == c] = (c + 1) % k
    return y, pred


def _sk(y, pred):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"accuracy": skm.accuracy_score(y, pred),
                "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
                "macro_f1": skm.f1_score(y, pred, average="macro", zero_division=0)}


@pytest.mark.parametrize("never", [(), (2,), (0, 3)])
def test_estimates_are_sklearn_values(never):
    y, pred = _data(1, never=never)
    r = bootstrap_intervals(y, {"a": pred}, K, train_counts=COUNTS,
                            options=BootstrapOptions(resamples=50))
    m = r["metrics"]["a"]
    for key, value in _sk(y, pred).items():
        assert m[key]["estimate"] == pytest.approx(value, abs=1e-12)
    p, rec, _, _ = skm.precision_recall_fscore_support(y, pred, labels=range(K),
                                                       zero_division=0)
    np.testing.assert_allclose(m["recall"]["estimate"], rec)
    np.testing.assert_allclose(m["precision"]["estimate"], p)
    ref = compute_metrics(y, pred, [str(i) for i in range(K)], train_counts=COUNTS)
    for g in ("many", "medium", "few"):
        assert m[f"{g}_shot_accuracy"]["estimate"] == pytest.approx(ref[f"{g}_shot_accuracy"])


def test_stratified_resamples_keep_every_class_support():
    y, _ = _data(2)
    idx = stratified_indices(y, 30, seed=4)
    assert idx.shape == (30, y.size)
    for row in idx:
        np.testing.assert_array_equal(np.bincount(y[row], minlength=K),
                                      np.bincount(y, minlength=K))
    np.testing.assert_array_equal(idx, stratified_indices(y, 30, seed=4))
    assert not np.array_equal(idx, stratified_indices(y, 30, seed=5))


def test_resampled_counts_match_the_confusion_matrix():
    y, pred = _data(3)
    idx = stratified_indices(y, 7, seed=0)
    tp, predicted = resampled_counts(y, pred, idx, K)
    for b, row in enumerate(idx):
        cm = skm.confusion_matrix(y[row], pred[row], labels=range(K))
        np.testing.assert_array_equal(tp[b], np.diag(cm))
        np.testing.assert_array_equal(predicted[b], cm.sum(axis=0))


@pytest.mark.parametrize("never", [(), (4,)])
def test_interval_ends_equal_a_loop_over_the_same_resamples(never):
    """The vectorised statistics equal sklearn on each resampled set, row by row."""
    y, a = _data(4, never=never)
    _, b = _data(5)
    options = BootstrapOptions(resamples=120, confidence=0.9, seed=3)
    r = bootstrap_intervals(y, {"a": a, "b": b}, K, baseline="a", options=options)
    idx = stratified_indices(y, 120, seed=3)
    ref = {name: [_sk(y[row], p[row]) for row in idx] for name, p in (("a", a), ("b", b))}
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        va = np.array([s[key] for s in ref["a"]])
        vb = np.array([s[key] for s in ref["b"]])
        low, high = np.quantile(va, [0.05, 0.95])
        assert r["metrics"]["a"][key]["low"] == pytest.approx(low, abs=1e-12)
        assert r["metrics"]["a"][key]["high"] == pytest.approx(high, abs=1e-12)
        low, high = np.quantile(vb - va, [0.05, 0.95])
        assert r["differences"]["b"][key]["low"] == pytest.approx(low, abs=1e-12)
        assert r["differences"]["b"][key]["high"] == pytest.approx(high, abs=1e-12)


def test_interval_agrees_with_an_independent_bootstrap():
    """Against a plain loop with its own random stream: ends agree within noise."""
    y, pred = _data(6, n=400)
    r = bootstrap_intervals(y, {"a": pred}, K, options=BootstrapOptions(resamples=4000))
    rng = np.random.default_rng(123)
    members = [np.flatnonzero(y == c) for c in range(K)]
    hit = pred == y
    values = []  # balanced accuracy: the mean of the resampled class recalls
    for _ in range(4000):
        values.append(np.mean([hit[rng.choice(m, size=m.size)].mean() for m in members]))
    low, high = np.quantile(values, [0.025, 0.975])
    got = r["metrics"]["a"]["balanced_accuracy"]
    assert got["low"] == pytest.approx(low, abs=0.01)
    assert got["high"] == pytest.approx(high, abs=0.01)
    assert got["low"] < got["estimate"] < got["high"]


def test_identical_predictions_differ_by_exactly_zero():
    y, pred = _data(7)
    r = bootstrap_intervals(y, {"none": pred, "same": pred.copy()}, K, baseline="none",
                            train_counts=COUNTS, options=BootstrapOptions(resamples=200))
    for key, d in r["differences"]["same"].items():
        assert np.all(np.asarray(d["low"]) == 0) and np.all(np.asarray(d["high"]) == 0), key


def test_pairing_narrows_the_difference_interval():
    y, a = _data(8, n=500)
    b = a.copy()
    rng = np.random.default_rng(0)
    flip = rng.choice(y.size, 25, replace=False)
    b[flip] = y[flip]  # b fixes 25 of a's samples (some were right already)
    r = bootstrap_intervals(y, {"a": a, "b": b}, K, baseline="a")
    own = r["metrics"]["a"]["balanced_accuracy"]
    diff = r["differences"]["b"]["balanced_accuracy"]
    assert diff["low"] >= 0  # b is never worse on any resample
    assert diff["high"] - diff["low"] < (own["high"] - own["low"]) / 2


def test_several_seeds_average_per_resample():
    y, a0 = _data(9)
    _, a1 = _data(10)
    r = bootstrap_intervals(y, {"a": [a0, a1]}, K, options=BootstrapOptions(resamples=100))
    expected = np.mean([_sk(y, a0)["balanced_accuracy"], _sk(y, a1)["balanced_accuracy"]])
    assert r["metrics"]["a"]["balanced_accuracy"]["estimate"] == pytest.approx(expected)


def test_bad_arguments_are_named():
    y, pred = _data(0)
    with pytest.raises(ConfigError, match="resamples"):
        BootstrapOptions(resamples=0)
    with pytest.raises(ConfigError, match="confidence"):
        BootstrapOptions(confidence=95)
    with pytest.raises(ConfigError, match="baseline"):
        bootstrap_intervals(y, {"a": pred}, K, baseline="b")
    with pytest.raises(DataError, match="'a'"):
        bootstrap_intervals(y, {"a": pred[:-1]}, K)
    with pytest.raises(DataError, match="0..4"):
        bootstrap_intervals(y, {"a": pred + 1}, K)
    assert parse_requirement(" logit-adjust > none") == ("logit-adjust", "none")
    for bad in ("a", "a>", ">b", "a>b>c"):
        with pytest.raises(ConfigError, match="--require"):
            parse_requirement(bad)


def test_verdict_names_the_winner_or_noise():
    y, a = _data(11, n=600, accuracy=0.5)
    good = np.where(np.random.default_rng(1).random(y.size) < 0.9, y, a)
    r = bootstrap_intervals(y, {"none": a, "good": good, "same": a}, K, baseline="none",
                            options=BootstrapOptions(resamples=300))
    assert verdict(r).startswith("verdict: good beats none on balanced accuracy by +")
    r = bootstrap_intervals(y, {"none": a, "same": a}, K, baseline="none",
                            options=BootstrapOptions(resamples=300))
    assert "no strategy beats none beyond noise" in verdict(r)


def test_evaluate_adds_intervals_to_metrics():
    from longtail.evaluation import evaluate

    y, pred = _data(12, n=240)
    scores = np.eye(K)[pred] + 0.01
    batches = [(scores[i:i + 64], y[i:i + 64]) for i in range(0, y.size, 64)]
    options = BootstrapOptions(resamples=300, seed=2)
    m = evaluate(lambda x, training=False: x, batches, train_counts=COUNTS,
                 bootstrap=options).to_dict()
    ref = bootstrap_intervals(y, {"m": pred}, K, train_counts=COUNTS, options=options)
    assert m["intervals"]["resamples"] == 300 and m["intervals"]["confidence"] == 0.95
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "few_shot_accuracy"):
        assert m["intervals"][key]["low"] == ref["metrics"]["m"][key]["low"]
        assert m["intervals"][key]["high"] == ref["metrics"]["m"][key]["high"]
        assert m["intervals"][key]["low"] <= m[key] <= m["intervals"][key]["high"]
    for i, row in enumerate(m["per_class"]):
        assert row["recall_interval"] == [ref["metrics"]["m"]["recall"]["low"][i],
                                          ref["metrics"]["m"]["recall"]["high"][i]]
    off = evaluate(lambda x, training=False: x, batches, bootstrap=False).to_dict()
    assert "intervals" not in off
