"""Tests of longtail.losses: NumPy references from the papers, Keras'
focal loss, the three backends, serialisation, zero counts and errors."""

import itertools
import json
import warnings

import keras
import numpy as np
import pytest
from _loss_backend_values import (
    BACKENDS,
    CASES,
    COUNTS,
    K,
    PRIORS,
    WEIGHTS,
    make_inputs,
    result_of,
    run_all_backends,
    start_backends,
)

from longtail import losses
from longtail.errors import ConfigError

# ---------------------------------------------------------------------------
# NumPy references, written from the papers' formulas (float64)
# ---------------------------------------------------------------------------


def np_log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def np_ce(y, z, w=None):
    w = np.ones(y.shape[-1]) if w is None else np.asarray(w, dtype=np.float64)
    return -(y * w * np_log_softmax(z)).sum(-1)


def np_focal(y, z, gamma, alpha=None):
    """Lin et al. 2017, softmax form: -sum_c y_c a_c (1 - p_c)^g log p_c."""
    alpha = np.ones(y.shape[-1]) if alpha is None else np.broadcast_to(alpha, y.shape[-1:])
    log_p = np_log_softmax(z)
    return -(y * alpha * (1.0 - np.exp(log_p)) ** gamma * log_p).sum(-1)


def np_effective_weights(counts, beta):
    """Cui et al. 2019: (1 - beta) / (1 - beta^n), normalised to sum to k."""
    n = np.asarray(counts, dtype=np.float64)
    w = (1.0 - beta) / (1.0 - beta**n)
    return w * len(n) / w.sum()


def np_ldam(y, z, counts, max_margin, scale, w=None):
    """Cao et al. 2019: margins C / n^(1/4) on the target logit, times s."""
    m = np.asarray(counts, dtype=np.float64) ** -0.25
    m = m * max_margin / m.max()
    shifted = z - (y @ m)[:, None] * y
    return np_ce(y, scale * shifted, w)


def np_floor_counts(counts):
    """The documented rule: zero counts become min(1, smallest positive)."""
    c = np.asarray(counts, dtype=np.float64)
    return np.where(c == 0, min(1.0, c[c > 0].min()), c)


def np_floor_priors(priors):
    """The documented rule: zero priors become the smallest positive prior."""
    p = np.asarray(priors, dtype=np.float64)
    return np.where(p == 0, p[p > 0].min(), p)


def reference(name, y, z):
    """Per-sample loss of a CASES entry for dense targets y and logits z."""
    cls_name, kw = CASES[name]
    if cls_name == "WeightedCrossentropy":
        return np_ce(y, z, kw["class_weight"])
    if cls_name == "Focal":
        return np_focal(y, z, kw["gamma"], kw.get("alpha"))
    if cls_name == "ClassBalanced":
        w = np_effective_weights(np_floor_counts(kw["class_counts"]), kw["beta"])
        if kw.get("base") == "focal":
            return np_focal(y, z, kw["gamma"], w)
        return np_ce(y, z, w)
    if cls_name == "LogitAdjusted":
        return np_ce(y, z + kw["tau"] * np.log(np_floor_priors(kw["priors"])))
    if cls_name == "BalancedSoftmax":
        return np_ce(y, z + np.log(np_floor_counts(kw["class_counts"])))
    if cls_name == "LDAM":
        return np_ldam(y, z, np_floor_counts(kw["class_counts"]),
                       kw.get("max_margin", 0.5), kw.get("scale", 30.0),
                       kw.get("class_weight"))
    raise AssertionError(name)


INPUTS = make_inputs()
TARGETS = {"sparse": INPUTS["onehot"], "onehot": INPUTS["onehot"], "soft": INPUTS["soft"]}


def build(case, **overrides):
    cls_name, kw = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the *_zero cases warn
        return losses.LOSSES[cls_name](**{**kw, **overrides})


def values(loss, y, z):
    return keras.ops.convert_to_numpy(loss(y, z)).astype(np.float64)


@pytest.fixture(scope="module", autouse=True)
def _start_backend_runs():
    start_backends()  # the other backends run while this module's tests do


@pytest.fixture(scope="module")
def backend_results():
    return run_all_backends()


# ---------------------------------------------------------------------------
# Values in this process: Keras references and formula checks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (1.0, 0.0), (0.6, 3.5),
                                         ([0.1, 0.2, 0.3, 0.4, 1.5], 1.0)])
def test_focal_matches_keras_categorical_focal(alpha, gamma):
    keras_loss = keras.losses.CategoricalFocalCrossentropy(
        alpha=alpha, gamma=gamma, from_logits=True, reduction=None)
    ours = losses.Focal(gamma=gamma, alpha=alpha, reduction=None)
    z, y = INPUTS["logits"], INPUTS["onehot"]
    want = values(keras_loss, y, z)
    np.testing.assert_allclose(values(ours, y, z), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(values(ours, INPUTS["sparse"], z), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(values(ours, INPUTS["soft"], z),
                               values(keras_loss, INPUTS["soft"], z), rtol=1e-5, atol=1e-7)


def test_unit_weights_give_keras_crossentropy():
    z, y = INPUTS["logits"], INPUTS["sparse"]
    want = keras.ops.convert_to_numpy(
        keras.losses.sparse_categorical_crossentropy(y, z, from_logits=True))
    loss = losses.WeightedCrossentropy(np.ones(K), reduction=None)
    np.testing.assert_allclose(values(loss, y, z), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(values(losses.Focal(gamma=0.0, reduction=None), y, z), want,
                               rtol=1e-6, atol=1e-7)


def test_sparse_column_targets_equal_flat_targets():
    z = INPUTS["logits"]
    for name in CASES:
        loss = build(name, reduction=None)
        pred = z if CASES[name][1].get("from_logits", True) else keras.ops.softmax(z)
        np.testing.assert_allclose(values(loss, INPUTS["sparse"][:, None], pred),
                                   values(loss, INPUTS["sparse"], pred), rtol=1e-6, err_msg=name)


def test_balanced_softmax_is_logit_adjustment_with_count_priors():
    z, y = INPUTS["logits"], INPUTS["sparse"]
    np.testing.assert_allclose(
        values(losses.BalancedSoftmax(COUNTS), y, z),
        values(losses.LogitAdjusted(COUNTS, tau=1.0), y, z), rtol=1e-6)


def test_ldam_margins_follow_the_paper():
    loss = losses.LDAM([1000, 100, 10], max_margin=0.5)
    assert loss.margins == pytest.approx([0.5 * 10**-0.5, 0.5 * 10**-0.25, 0.5])
    # One-hot rows get exactly the sparse margin; soft rows sum_c y_c m_c.
    z = np.zeros((1, 3), "float32")
    assert values(loss, np.array([2]), z) == pytest.approx(
        -np_log_softmax(np.array([[0.0, 0.0, -15.0]]))[0, 2], rel=1e-6)


def test_class_balanced_weights_follow_the_paper():
    loss = losses.ClassBalanced([900, 90, 10], beta=0.999)
    w = loss.get_class_weight()
    assert w == pytest.approx(np_effective_weights([900, 90, 10], 0.999))
    assert w.sum() == pytest.approx(3.0)
    assert w[0] < w[1] < w[2]
    assert losses.ClassBalanced([900, 90, 10], beta=0.0).get_class_weight() == pytest.approx(1.0)


def test_reductions_and_sample_weight():
    z, y = INPUTS["logits"], INPUTS["sparse"]
    per_sample = values(losses.Focal(alpha=WEIGHTS, reduction=None), y, z)
    total = values(losses.Focal(alpha=WEIGHTS, reduction="sum"), y, z)
    assert total == pytest.approx(per_sample.sum(), rel=1e-6)
    sw = np.linspace(0.0, 1.0, len(y)).astype("float32")
    mean = keras.ops.convert_to_numpy(losses.Focal(alpha=WEIGHTS)(y, z, sample_weight=sw))
    assert mean == pytest.approx((per_sample * sw).sum() / len(y), rel=1e-5)


def test_set_class_weight_changes_values_and_checks_length():
    z, y = INPUTS["logits"], INPUTS["sparse"]
    loss = losses.LDAM(COUNTS, scale=1.0, reduction=None)
    plain = values(loss, y, z)
    loss.set_class_weight(WEIGHTS)
    np.testing.assert_allclose(values(loss, y, z), plain * np.asarray(WEIGHTS)[y], rtol=1e-6)
    assert loss.get_class_weight() == pytest.approx(WEIGHTS)
    assert loss.get_config()["class_weight"] is None  # the constructor's argument
    with pytest.raises(ConfigError, match="5 entries"):
        loss.set_class_weight([1.0, 2.0])
    focal = losses.Focal(alpha=0.25, reduction=None)
    assert focal.get_class_weight() is None
    focal.set_class_weight(np.full(K, 2.0))
    np.testing.assert_allclose(values(focal, y, z),
                               np_focal(INPUTS["onehot"], z, 2.0, 2.0), rtol=1e-5)


def test_dtype_policy_round_trips():
    loss = losses.Focal(dtype=keras.dtype_policies.DTypePolicy("float32"))
    clone = losses.Focal.from_config(json.loads(json.dumps(loss.get_config())))
    assert clone.dtype == "float32" and clone.get_config() == loss.get_config()
    assert losses.Focal().get_config()["dtype"] is None


def test_dict_class_weight_equals_list():
    a = losses.WeightedCrossentropy({1: 2.0, 0: 1.0, 2: 0.5})
    assert a.class_weight == [1.0, 2.0, 0.5]
    assert a.get_config()["class_weight"] == [1.0, 2.0, 0.5]


# ---------------------------------------------------------------------------
# Zero counts and priors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: losses.BalancedSoftmax([100, 0, 5]),
    lambda: losses.LDAM([100, 0, 5]),
    lambda: losses.ClassBalanced([100, 0, 5]),
    lambda: losses.LogitAdjusted([0.9, 0.0, 0.1]),
])
def test_zero_counts_warn_and_stay_finite(make):
    with pytest.warns(UserWarning, match="zero for class"):
        loss = make()
    z = np.array([[3.0, -2.0, 0.5], [0.0, 0.0, 0.0]], "float32")
    for y in (np.array([0, 1]), np.array([2, 1])):
        assert np.all(np.isfinite(values(loss, y, z)))


def test_zero_count_floor_leaves_other_classes_alone():
    with pytest.warns(UserWarning):
        ldam = losses.LDAM([100, 0, 5])
    # A zero-count class is a one-sample class; the others keep their margins.
    assert ldam.margins == pytest.approx(losses.LDAM([100, 1, 5]).margins)
    with pytest.warns(UserWarning):
        fractional = losses.BalancedSoftmax([0.5, 0.0, 0.25])
    assert fractional.class_counts == [0.5, 0.25, 0.25]
    with pytest.warns(UserWarning):
        la = losses.LogitAdjusted([0.9, 0.0, 0.1])
    assert la.priors == [0.9, 0.1, 0.1]


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("make,message", [
    (lambda: losses.LogitAdjusted(PRIORS, tau=-1), r"`tau` must be >= 0; got -1"),
    (lambda: losses.LogitAdjusted([0.0, 0.0]), r"`priors` must not be all zero"),
    (lambda: losses.LogitAdjusted([0.5, -0.1, 0.6]), r"`priors` must be >= 0"),
    (lambda: losses.LogitAdjusted([1.0]), r"`priors` must be a flat list .*at least 2"),
    (lambda: losses.LogitAdjusted("balanced"), r"`priors` must be a list"),
    (lambda: losses.BalancedSoftmax([10, float("nan")]), r"`class_counts` must be finite"),
    (lambda: losses.ClassBalanced(COUNTS, beta=1.0), r"`beta` must be in \[0, 1\); got 1"),
    (lambda: losses.ClassBalanced(COUNTS, base="dice"),
     r"`base` must be one of crossentropy, focal; got 'dice'"),
    (lambda: losses.Focal(gamma=-2), r"`gamma` must be >= 0; got -2"),
    (lambda: losses.Focal(alpha=-0.5), r"`alpha` must be >= 0; got -0.5"),
    (lambda: losses.Focal(gamma="2"), r"`gamma` must be a number; got '2'"),
    (lambda: losses.LDAM(COUNTS, max_margin=0), r"`max_margin` must be > 0; got 0"),
    (lambda: losses.LDAM(COUNTS, scale=-1), r"`scale` must be > 0; got -1"),
    (lambda: losses.LDAM(COUNTS, class_weight=[1, 2]),
     r"`class_weight` must have one entry per class \(5"),
    (lambda: losses.WeightedCrossentropy({0: 1.0, 2: 3.0}),
     r"`class_weight` .* every class index 0..2; missing \[1\]"),
    (lambda: losses.WeightedCrossentropy({"cat": 1.0, "dog": 3.0}),
     r"`class_weight` as a dict must be keyed by class index"),
])
def test_bad_arguments_raise_config_error(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_class_count_mismatch_and_bad_targets_raise():
    z = np.zeros((2, 4), "float32")
    with pytest.raises(ValueError, match="`priors` has 5 entries but the model outputs 4"):
        losses.LogitAdjusted(PRIORS)(np.array([0, 1]), z)
    with pytest.raises(ValueError, match="`class_weight` has 5 entries"):
        losses.WeightedCrossentropy(WEIGHTS)(np.array([0, 1]), z)
    with pytest.raises(ValueError, match="fits neither sparse labels"):
        losses.Focal()(np.zeros((2, 3), "float32"), z)


# ---------------------------------------------------------------------------
# Serialisation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_config_round_trip(name):
    loss = build(name, reduction="sum", name=f"my_{name}", dtype="float32")
    config = loss.get_config()
    assert json.loads(json.dumps(config)) == config  # plain JSON
    assert (config["reduction"], config["name"], config["dtype"]) == (
        "sum", f"my_{name}", "float32")
    clone = type(loss).from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(loss)
    assert serialized["registered_name"] == f"longtail>{type(loss).__name__}"
    again = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(again) is type(loss) and again.get_config() == config
    z, y = INPUTS["logits"], INPUTS["sparse"]
    assert values(again, y, z) == pytest.approx(values(loss, y, z), rel=1e-6)


# One case per loss class, plus a class-weighted LDAM.
SAVE_CASES = sorted({cls_name: name for name, (cls_name, _) in reversed(CASES.items())
                     }.values()) + ["ldam_weighted"]


@pytest.mark.parametrize("name", SAVE_CASES)
def test_keras_file_save_and_load(tmp_path, name):
    loss = build(name)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(K, activation=(
        None if CASES[name][1].get("from_logits", True) else "softmax"))])
    model.compile(keras.optimizers.SGD(0.01), loss=loss)
    x = np.random.RandomState(0).rand(8, 3).astype("float32")
    y = INPUTS["sparse"][:8]
    expected = model.evaluate(x, y, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loaded = keras.saving.load_model(path)  # safe_mode=True by default
    assert type(loaded.loss) is type(loss)
    assert loaded.loss.get_config() == loss.get_config()
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------
# Values: every backend against the references and against each other
# (last in the file: the other backends' runs overlap the tests above)
# ---------------------------------------------------------------------------


def test_every_loss_has_backend_cases():
    assert {cls_name for cls_name, _ in CASES.values()} == set(losses.LOSSES)


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_match_numpy_reference(backend):
    result = result_of(backend)
    assert result["backend"] == backend
    assert set(result["values"]) == set(CASES)
    for name, by_target in result["values"].items():
        z = INPUTS["logits"]
        for target, got in by_target.items():
            want = reference(name, TARGETS[target], z)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{backend} {name} {target}")
        # Sparse and one-hot targets give the same values.
        np.testing.assert_allclose(by_target["sparse"], by_target["onehot"],
                                   rtol=1e-6, atol=1e-7, err_msg=name)
        assert np.ptp(by_target["sparse"]) > 0, name  # not a constant


def test_backends_agree(backend_results):
    ok = {b: r for b, r in backend_results.items() if not isinstance(r, str)}
    if len(ok) < 2:
        pytest.skip("fewer than two backends ran")
    for (b1, r1), (b2, r2) in itertools.combinations(ok.items(), 2):
        for name in CASES:
            for target in ("sparse", "onehot", "soft"):
                np.testing.assert_allclose(
                    r1["values"][name][target], r2["values"][name][target],
                    rtol=1e-5, atol=1e-6, err_msg=f"{b1} vs {b2}: {name} {target}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_logits_give_exact_values_and_finite_gradients(backend):
    result = result_of(backend)
    logit_cases = [n for n in CASES if CASES[n][1].get("from_logits", True)]
    assert set(result["extreme"]) == set(logit_cases)
    for name in logit_cases:
        want = reference(name, INPUTS["onehot"], INPUTS["extreme"])
        assert np.all(np.isfinite(result["extreme"][name])), name
        # float32 rounds logits of 1e4 (times LDAM's scale) to ~1e-7 of their
        # size; a loss that is a difference of such logits inherits that error.
        atol = 1e-6 * CASES[name][1].get("scale", 1.0) * np.abs(INPUTS["extreme"]).max()
        np.testing.assert_allclose(result["extreme"][name], want, rtol=1e-5, atol=atol,
                                   err_msg=f"{backend} {name}")
        assert result["grads_finite"][name] is True, f"{backend} {name}"
    # The inputs really are extreme: logit gaps of 2e4, losses in the 1e4s.
    assert np.max(reference("weighted_ce", INPUTS["onehot"], INPUTS["extreme"])) > 1e4
