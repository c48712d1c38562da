"""Tests for longtail.sampling: coverage, shares, determinism, sharding."""

import json

import numpy as np
import pytest

from longtail.errors import ConfigError
from longtail.sampling import (SAMPLERS, Power, Progressive, Sampler, Shuffle,
                               class_shares, resolve_sampling, shard)

# A long tail: 1000, 300, 60, 12, 3 samples, in shuffled order.
COUNTS = np.array([1000, 300, 60, 12, 3])
LABELS = np.random.default_rng(7).permutation(np.repeat(np.arange(5), COUNTS))
SMALL = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])


def _per_class(plan, labels=LABELS, k=5):
    return np.bincount(labels[plan], minlength=k)


# ------------------------------------------------------------ contract suite
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_honours_the_contract(name):
    sampler = resolve_sampling(name)
    plan = sampler.plan(LABELS, seed=3, epoch=2)
    assert plan.dtype == np.int64 and plan.ndim == 1
    assert len(plan) == sampler.length(LABELS)
    assert plan.min() >= 0 and plan.max() < len(LABELS)
    # a pure function of (labels, seed, epoch)
    np.testing.assert_array_equal(plan, resolve_sampling(name).plan(LABELS, seed=3, epoch=2))
    if name != "sequential":
        assert not np.array_equal(plan, sampler.plan(LABELS, seed=3, epoch=3))
        assert not np.array_equal(plan, sampler.plan(LABELS, seed=4, epoch=2))
    # config round trip, through JSON
    config = json.loads(json.dumps(sampler.get_config()))
    assert resolve_sampling(config) == sampler
    assert sampler.plan(np.array([], np.int64)).size == 0


# ------------------------------------------------------------ coverage
def test_shuffle_visits_every_sample_exactly_once_in_a_new_order():
    plans = [Shuffle().plan(LABELS, seed=0, epoch=e) for e in range(3)]
    for plan in plans:
        np.testing.assert_array_equal(np.sort(plan), np.arange(len(LABELS)))
    assert not np.array_equal(plans[0], plans[1])


def test_shuffle_has_no_2_24_limit():
    n = 2**24 + 3
    plan = Shuffle().plan(np.zeros(n, np.uint8), seed=1)
    assert np.bincount(plan, minlength=n).min() == 1 and len(plan) == n


def test_sequential_is_index_order():
    np.testing.assert_array_equal(resolve_sampling("sequential").plan(LABELS), np.arange(len(LABELS)))


def test_determinism_pinned_with_literal_indices():
    assert resolve_sampling("shuffle").plan(SMALL, seed=0, epoch=0).tolist() == \
        [4, 5, 2, 6, 3, 8, 7, 0, 1]
    assert resolve_sampling("balanced").plan(SMALL, seed=0, epoch=0).tolist() == \
        [8, 3, 8, 7, 6, 5, 4, 6, 8]
    assert resolve_sampling("undersample").plan(SMALL, seed=0, epoch=1).tolist() == \
        [7, 8, 3]


# ------------------------------------------------------------ class shares
@pytest.mark.parametrize("sampling,q", [("balanced", 0.0), ("sqrt", 0.5),
                                        ({"name": "power", "q": 0.25}, 0.25),
                                        ({"name": "power", "q": 1.0}, 1.0)])
def test_class_shares_match_n_c_to_the_q(sampling, q):
    sampler = resolve_sampling(sampling)
    expected = class_shares(COUNTS, q) * len(LABELS)
    for epoch in range(5):
        got = _per_class(sampler.plan(LABELS, seed=1, epoch=epoch))
        # systematic rounding: every class within one draw of its expectation
        assert np.all(np.abs(got - expected) < 1.0 + 1e-9), (got, expected)
        assert got.sum() == len(LABELS)


def test_expected_counts_are_unbiased_over_epochs():
    sampler = resolve_sampling("balanced")
    total = sum(_per_class(sampler.plan(LABELS, seed=0, epoch=e)) for e in range(200))
    np.testing.assert_allclose(total / 200, len(LABELS) / 5, rtol=0.01)


def test_balanced_repeats_minority_evenly_and_never_duplicates_majority():
    plan = resolve_sampling("balanced").plan(LABELS, seed=0, epoch=0)
    seen = np.bincount(plan, minlength=len(LABELS))
    quota = len(LABELS) / 5
    for c, n in enumerate(COUNTS):
        times = seen[LABELS == c]
        if n >= quota:  # majority: a random subset, no sample twice
            assert times.max() == 1
        else:  # minority: every sample floor or ceil(quota / n) times
            assert times.min() >= np.floor(quota / n) - 1
            assert times.max() <= np.ceil(quota / n) + 1
            assert times.max() - times.min() <= 2


def test_epoch_length_is_configurable():
    plan = resolve_sampling({"name": "balanced", "epoch_length": 500}).plan(LABELS, seed=0)
    assert len(plan) == 500
    assert np.all(np.abs(_per_class(plan) - 100) <= 1)


def test_undersample_cuts_every_class_to_the_smallest_fresh_each_epoch():
    sampler = resolve_sampling("undersample")
    first, second = (sampler.plan(LABELS, seed=0, epoch=e) for e in (0, 1))
    assert len(first) == 5 * 3 and np.all(_per_class(first) == 3)
    assert len(np.unique(first)) == len(first)
    assert set(first[LABELS[first] == 0]) != set(second[LABELS[second] == 0])


def test_empty_classes_get_no_share():
    labels = np.array([0, 0, 0, 2, 2, 4])
    plan = resolve_sampling("balanced").plan(labels, seed=0)
    counts = np.bincount(labels[plan], minlength=5)
    assert counts[1] == counts[3] == 0 and counts[[0, 2, 4]].tolist() == [2, 2, 2]
    assert len(resolve_sampling("undersample").plan(labels)) == 3


def test_progressive_goes_from_instance_to_class_balanced():
    sampler = Progressive(epochs=4)
    assert [sampler.exponent(t) for t in (0, 1, 2, 4, 9)] == [1.0, 0.75, 0.5, 0.0, 0.0]
    for epoch, q in ((0, 1.0), (2, 0.5), (4, 0.0), (7, 0.0)):
        got = _per_class(sampler.plan(LABELS, seed=0, epoch=epoch))
        assert np.all(np.abs(got - class_shares(COUNTS, q) * len(LABELS)) < 1 + 1e-9)


# ------------------------------------------------------------ resolve
def test_resolve_accepts_names_dicts_and_instances():
    assert resolve_sampling("power") == Power(q=0.5)
    assert resolve_sampling({"name": "power", "q": 0.3}) == Power(q=0.3)
    sampler = Progressive(epochs=3)
    assert resolve_sampling(sampler) is sampler
    assert isinstance(resolve_sampling("progressive"), Sampler)


@pytest.mark.parametrize("bad,message", [
    ("balance", "sampling must be one of shuffle, sequential, balanced, undersample, sqrt, "
                "power, progressive"),
    ({"q": 0.5}, "sampling must be one of"),
    ({"name": "power", "k": 1}, "sampling 'power': bad options"),
    ({"name": "power", "q": float("nan")}, "q must be a finite number"),
    ({"name": "progressive", "epochs": 0}, "epochs must be a positive int"),
    ({"name": "balanced", "epoch_length": -1}, "epoch_length must be a positive int"),
    (3, "got 3"),
])
def test_resolve_rejects_bad_input(bad, message):
    with pytest.raises(ConfigError, match=message):
        resolve_sampling(bad)


# ------------------------------------------------------------ sharding
@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_shards_are_disjoint_equal_and_union_to_the_global_plan(count):
    plan = Shuffle().plan(np.zeros(1500), seed=2, epoch=1)  # 1500 divisible by 1,2,3,5
    parts = [shard(plan, i, count) for i in range(count)]
    assert len({len(p) for p in parts}) == 1
    # interleaved: stacking the local plans column-wise gives the global plan
    np.testing.assert_array_equal(np.stack(parts, axis=1).reshape(-1), plan)
    assert len(np.unique(np.concatenate(parts))) == len(plan)


def test_shard_remainder_pad_and_drop():
    plan = np.arange(10) * 10
    padded = [shard(plan, i, 4) for i in range(4)]
    assert [len(p) for p in padded] == [3, 3, 3, 3]
    union = np.concatenate(padded)
    assert set(union) == set(plan) and sorted(union)[:2] == [0, 0]  # 2 wrapped repeats
    dropped = [shard(plan, i, 4, remainder="drop") for i in range(4)]
    assert [len(p) for p in dropped] == [2, 2, 2, 2]
    np.testing.assert_array_equal(np.sort(np.concatenate(dropped)), plan[:8])


@pytest.mark.parametrize("args,message", [((0, 0), "shard count must be a positive int"),
                                          ((2, 2), r"shard index must be an int in \[0, 1\]"),
                                          ((-1, 2), "shard index")])
def test_shard_rejects_bad_arguments(args, message):
    with pytest.raises(ConfigError, match=message):
        shard(np.arange(4), *args)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_each_sampler_reports_the_class_shares_its_plans_have(name):
    sampler = resolve_sampling(name)
    labels = np.append(LABELS, 6)  # class 5 empty, class 6 a single sample
    counts = np.bincount(labels)
    for epoch in (0, 3, 12):
        shares = sampler.class_shares(counts, epoch=epoch)
        assert shares.shape == (7,) and shares[5] == 0 and np.isclose(shares.sum(), 1.0)
        plan = sampler.plan(labels, seed=1, epoch=epoch)
        got = np.bincount(labels[plan], minlength=7)
        # quotas are the expected counts rounded by systematic sampling
        assert np.all(np.abs(got - shares * len(plan)) < 1), (epoch, got, shares * len(plan))


def test_class_shares_follow_the_formulas():
    counts = np.array([100, 25, 0, 4])
    np.testing.assert_allclose(resolve_sampling("shuffle").class_shares(counts),
                               counts / 129)
    np.testing.assert_allclose(resolve_sampling("balanced").class_shares(counts),
                               [1 / 3, 1 / 3, 0, 1 / 3])
    np.testing.assert_allclose(resolve_sampling("sqrt").class_shares(counts),
                               np.array([10, 5, 0, 2]) / 17)
    progressive = resolve_sampling({"name": "progressive", "epochs": 4})
    np.testing.assert_allclose(progressive.class_shares(counts, epoch=2),
                               np.array([10, 5, 0, 2]) / 17)


def test_grouping_by_class_is_a_stable_argsort_across_chunks(monkeypatch):
    import longtail.sampling as sampling

    labels = np.random.default_rng(0).integers(0, 7, 1000).astype(np.int32)
    labels[labels == 4] = 5  # an empty class in the middle
    counts = np.bincount(labels, minlength=8)
    monkeypatch.setattr(sampling, "_CHUNK", 64)  # many chunks, ends mid-chunk
    for dtype in (np.int32, np.int64):
        grouped = sampling._group_by_class(labels, counts, dtype)
        assert grouped.dtype == dtype
        np.testing.assert_array_equal(grouped, np.argsort(labels, kind="stable"))
