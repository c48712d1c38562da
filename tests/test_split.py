import numpy as np
import pytest
from sklearn.model_selection import train_test_split

import longtail as lt
from longtail.errors import ConfigError
from longtail.split import stratified_split


def long_tail_labels(seed=0, k=12, head=400, ratio=100):
    counts = np.round(head * ratio ** (-np.arange(k) / (k - 1))).astype(int)
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(k), counts)), counts


@pytest.mark.parametrize("val,test", [(0.2, 0.0), (0.1, 0.1), (0.25, 0.15)])
def test_per_class_counts_match_fractions(val, test):
    y, counts = long_tail_labels()
    parts = stratified_split(y, val=val, test=test, seed=3)
    fractions = [1 - val - test, val] + ([test] if test else [])
    assert sum(len(p) for p in parts) == len(y)
    assert len(np.unique(np.concatenate(parts))) == len(y)  # disjoint cover
    # A class whose share of a held-out split rounds to zero still gets one
    # sample there; every other class is within one sample of the fractions.
    raised = np.zeros(len(counts), bool)
    for f in fractions[1:]:
        raised |= np.floor(f * counts + 0.5) == 0
    for part, f in zip(parts, fractions):
        got = np.bincount(y[part], minlength=len(counts))
        assert np.all(np.abs(got - f * counts)[~raised] <= 1), (got, f * counts)
        assert np.all(got >= 1)  # every class (>= 4 samples here) in every split
        if part is not parts[0]:
            assert np.all(got[raised] >= 1)


def test_agrees_with_sklearn_within_one_sample_per_class():
    y, counts = long_tail_labels(k=8, head=300, ratio=20)
    train, val = stratified_split(y, val=0.2, seed=0)
    sk_train, sk_val = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y,
                                        random_state=0)
    for ours, theirs in ((train, sk_train), (val, sk_val)):
        diff = np.bincount(y[ours], minlength=8) - np.bincount(y[theirs], minlength=8)
        assert np.abs(diff).max() <= 1


def test_rare_class_reaches_validation_where_sklearn_can_drop_it():
    y = np.array([0] * 200 + [1] * 2 + [2] * 200)
    for seed in range(20):
        train, val = stratified_split(y, val=0.1, seed=seed)
        assert set(y[val]) == {0, 1, 2} and set(y[train]) == {0, 1, 2}


def test_deterministic_by_seed_and_pinned():
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    a = stratified_split(y, val=0.4, seed=7)
    b = stratified_split(y, val=0.4, seed=7)
    c = stratified_split(y, val=0.4, seed=8)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))
    assert a[1].tolist() == np.sort(a[1]).tolist() and len(a[1]) == 4
    assert np.bincount(y[a[1]]).tolist() == [2, 2]


def test_warns_about_and_names_tiny_classes():
    y = np.array([0] * 50 + [1] * 50 + [2])
    names = ["cat", "dog", "axolotl"]
    with pytest.warns(UserWarning, match="too small .*: axolotl"):
        train, val, test = stratified_split(y, val=0.2, test=0.2, seed=0, class_names=names)
    assert 100 in train  # the single sample stays in training


@pytest.mark.parametrize("kw,msg", [
    (dict(val=1.2), "`val` must be a fraction"),
    (dict(val=-0.1), "`val` must be a fraction"),
    (dict(val=0.6, test=0.5), "below 1"),
    (dict(val=0.0, test=0.0), "at least one"),
])
def test_bad_fractions(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        stratified_split(np.array([0, 1] * 10), **kw)


def test_dataset_split_returns_datasets_with_same_classes():
    y, counts = long_tail_labels(k=5, head=100, ratio=10)
    ds = lt.Dataset.from_arrays([f"f{i}.png" for i in range(len(y))], y, root="/data")
    train, val, test = ds.split(val=0.2, test=0.1, seed=0)
    assert train.class_names == val.class_names == test.class_names == ds.class_names
    assert len(train) + len(val) + len(test) == len(ds)
    assert set(train.paths) | set(val.paths) | set(test.paths) == set(ds.paths)
    train2, test2 = ds.split(val=0.0, test=0.3, seed=0)
    assert len(test2) == pytest.approx(0.3 * len(ds), abs=5)
