import warnings

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

import longtail as lt
from longtail.weights import effective_number_weights
from longtail.errors import ConfigError


@pytest.fixture
def labels():
    return np.random.default_rng(0).choice(5, size=500, p=[0.6, 0.2, 0.1, 0.07, 0.03])


def test_balanced_equals_sklearn(labels):
    expected = compute_class_weight("balanced", classes=np.arange(5), y=labels)
    got = lt.class_weights(labels, "balanced")
    assert list(got) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([got[i] for i in range(5)], expected, rtol=1e-12)


def test_inverse_sqrt_effective_formulas(labels):
    n = np.bincount(labels)
    inverse = lt.class_weights(labels, "inverse")
    np.testing.assert_allclose(list(inverse.values()), n.max() / n)
    sqrt = lt.class_weights(labels, "sqrt")
    np.testing.assert_allclose(list(sqrt.values()), np.sqrt(n.max() / n))
    beta = 0.99
    eff = np.array(list(lt.class_weights(labels, "effective", beta=beta).values()))
    raw = (1 - beta) / (1 - beta ** n)
    np.testing.assert_allclose(eff, raw / raw.sum() * 5)
    assert eff.sum() == pytest.approx(5.0)
    # Effective weights fall between balanced (beta -> 1) and uniform (beta = 0).
    assert eff[4] > eff[0]


def test_one_hot_and_soft_labels_give_the_same_counts(labels):
    one_hot = np.eye(5)[labels]
    assert lt.class_weights(one_hot, "balanced") == lt.class_weights(labels, "balanced")


def test_dataset_input_and_names_in_dict():
    ds = lt.Dataset.from_arrays(["a"] * 3 + ["b"], ["x", "x", "x", "y"])
    assert lt.class_weights(ds, {"x": 1.0, 1: 3.0}) == {0: 1.0, 1: 3.0}
    with pytest.warns(UserWarning, match="no entry for classes y"):
        assert lt.class_weights(ds, {"x": 2.0}) == {0: 2.0, 1: 1.0}
    with pytest.raises(ConfigError, match="'z' is not a class"):
        lt.class_weights(ds, {"z": 2.0})
    with pytest.raises(ConfigError, match="finite and >= 0"):
        lt.class_weights(ds, {"x": -1.0})


def test_zero_count_class_gets_zero_weight_with_warning():
    with pytest.warns(UserWarning, match="no samples get class weight 0.0: 2"):
        w = lt.class_weights(np.array([0, 0, 1]), "balanced", num_classes=3)
    assert w[2] == 0.0 and np.isfinite(list(w.values())).all()
    # balanced over the present classes still matches sklearn on them
    np.testing.assert_allclose([w[0], w[1]], compute_class_weight(
        "balanced", classes=np.array([0, 1]), y=np.array([0, 0, 1])))


def test_callable_and_unknown_strategy():
    w = lt.class_weights([0, 1, 1], lambda counts: 1.0 / counts)
    assert w == {0: 1.0, 1: 0.5}
    with pytest.raises(ConfigError, match="must be one of balanced, inverse, sqrt, effective"):
        lt.class_weights([0, 1], "balance")
    with pytest.raises(ConfigError, match="beta"):
        lt.class_weights([0, 1], "effective", beta=1.0)


def test_sample_weights_sparse_one_hot_soft():
    cw = {0: 0.5, 1: 2.0, 2: 4.0}
    y = np.array([2, 0, 1])
    np.testing.assert_allclose(lt.sample_weights(y, cw), [4.0, 0.5, 2.0])
    np.testing.assert_allclose(lt.sample_weights(y[:, None], cw), [4.0, 0.5, 2.0])
    np.testing.assert_allclose(lt.sample_weights(np.eye(3)[y], cw), [4.0, 0.5, 2.0])
    soft = np.array([[0.5, 0.5, 0.0], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(lt.sample_weights(soft, cw), soft @ [0.5, 2.0, 4.0], rtol=1e-6)
    assert lt.sample_weights(y, cw).dtype == np.float32
    with pytest.warns(UserWarning, match=r"no entry for classes \[1\]"):
        np.testing.assert_allclose(lt.sample_weights([0, 1, 2], {0: 2.0, 2: 3.0}), [2, 1, 3])
    with pytest.raises(ConfigError, match="class indices in 0..2"):
        lt.sample_weights([3], cw)


def test_no_warning_when_dict_is_complete():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lt.sample_weights([0, 1], {0: 1.0, 1: 2.0})


# ---------------------------------------------------------------------------
# One effective-number formula (Cui et al. 2019)
# ---------------------------------------------------------------------------


def paper_effective_weights(counts, beta):
    """(1 - beta) / (1 - beta^n) per class with samples, scaled to sum to their number."""
    n = np.asarray(counts, dtype=np.float64)
    present = n > 0
    raw = (1.0 - beta) / (1.0 - beta ** n[present])
    out = np.zeros(len(n))
    out[present] = raw * present.sum() / raw.sum()
    return out


@pytest.mark.parametrize("counts", [[500, 60, 7, 1], [500, 0, 60, 7], [0.5, 2.25, 0.0]])
@pytest.mark.parametrize("beta", [0.0, 0.9, 0.999])
def test_effective_number_weights_follow_the_paper(counts, beta):
    got = effective_number_weights(counts, beta)
    np.testing.assert_allclose(got, paper_effective_weights(counts, beta), rtol=1e-12)
    assert got[np.asarray(counts) == 0].tolist() == [0.0] * counts.count(0)
    # A class with no samples leaves the others as they would be without it.
    present = [c for c in counts if c > 0]
    np.testing.assert_allclose(got[np.asarray(counts) > 0],
                               effective_number_weights(present, beta), rtol=1e-12)


def test_effective_weight_strategy_and_drw_agree_on_zero_counts():
    from longtail.callbacks import DeferredReweighting
    from longtail.strategies import STRATEGIES

    counts, beta = [400, 0, 30, 2], 0.99
    expected = paper_effective_weights(counts, beta)
    with pytest.warns(UserWarning, match="no samples get class weight 0.0: 1"):
        strategy = lt.class_weights(counts=counts, strategy="effective", beta=beta)
    with pytest.warns(UserWarning, match="no samples get class weight 0.0: 1"):
        drw = DeferredReweighting(counts, start_epoch=1, beta=beta)
    np.testing.assert_allclose(list(strategy.values()), expected, rtol=1e-12)
    np.testing.assert_allclose(drw.weights_for_epoch(1), expected, rtol=1e-12)
    # What the effective-weight strategy balances towards: counts times its weights.
    with pytest.warns(UserWarning, match="class weight 0.0"):
        share = STRATEGIES["effective-weight"].trained_distribution(np.array(counts),
                                                                    {"beta": beta})
    np.testing.assert_allclose(share, counts * expected / np.sum(counts * expected))
    # ClassBalanced raises a zero count to one sample (as every count-based loss
    # does) and then applies the same formula.
    from longtail.losses import ClassBalanced

    with pytest.warns(UserWarning, match="zero for class"):
        loss = ClassBalanced(counts, beta=beta)
    np.testing.assert_allclose(loss.get_class_weight(),
                               paper_effective_weights([400, 1, 30, 2], beta), rtol=1e-6)


# ---------------------------------------------------------------------------
# class_weights from counts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["balanced", "inverse", "sqrt", "effective",
                                      {"x": 2.0, "z": 0.5}, lambda n: 1.0 / np.sqrt(n + 1)])
def test_counts_give_what_the_dataset_gives(strategy):
    ds = lt.Dataset.from_arrays([f"{i}.png" for i in range(12)],
                                ["x"] * 8 + ["z"] * 3 + ["y"], class_names=["x", "y", "z", "w"])
    with warnings.catch_warnings(record=True) as from_dataset:
        warnings.simplefilter("always")
        expected = lt.class_weights(ds, strategy, beta=0.9)
    with warnings.catch_warnings(record=True) as from_counts:
        warnings.simplefilter("always")
        got = lt.class_weights(counts=ds.class_counts, strategy=strategy, beta=0.9,
                               class_names=ds.class_names)
    assert got == expected  # identical values, the same keys
    assert [str(w.message) for w in from_counts] == [str(w.message) for w in from_dataset]
    if not callable(strategy):  # the classes warned about are named, not numbered
        shown = [str(w.message) for w in from_counts]
        assert any(m.endswith("weight 0.0: w") or "for classes y, w;" in m for m in shown)


def test_counts_argument_errors():
    with pytest.raises(ConfigError, match="either `data`.*or `counts`, exactly one"):
        lt.class_weights([0, 1], counts=[1, 1])
    with pytest.raises(ConfigError, match="either `data`"):
        lt.class_weights()
    with pytest.raises(ConfigError, match=r"`counts` must be >= 0 for every class; got \[3.0, -1.0\]"):
        lt.class_weights(counts=[3, -1])
    with pytest.raises(ConfigError, match="`counts` must be finite numbers"):
        lt.class_weights(counts=[3, float("nan")])
    with pytest.raises(ConfigError, match="`class_names` must name the 2 classes; got 3 names"):
        lt.class_weights(counts=[3, 1], class_names=["a", "b", "c"])
