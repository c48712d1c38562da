import warnings

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

import longtail as lt
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
