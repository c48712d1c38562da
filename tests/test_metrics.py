import json
import warnings

import numpy as np
import pytest
from scipy.stats import gmean
from sklearn import metrics as skm

from longtail.errors import ConfigError, DataError
from longtail.metrics import compute_metrics, shot_groups

SCHEMA = {"classes", "accuracy", "balanced_accuracy", "macro_f1", "per_class",
          "confusion_matrix", "true_distribution", "predicted_distribution"}
PER_CLASS = {"class", "support", "precision", "recall", "f1", "predicted"}


def _data(seed, n=300, k=7, absent_true=(), absent_pred=()):
    """Random labels and scores; some classes never true, some never predicted."""
    rng = np.random.default_rng(seed)
    allowed = [c for c in range(k) if c not in absent_true]
    y = rng.choice(allowed, size=n)
    scores = rng.normal(size=(n, k))
    scores[np.arange(n), y] += rng.uniform(0, 2)  # better than chance, not perfect
    scores[:, list(absent_pred)] = -1e3
    return y, scores


def _compute(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compute_metrics(*args, **kw)


CASES = [
    dict(seed=0),
    dict(seed=1, absent_pred=(2, 5)),
    dict(seed=2, absent_true=(1,)),
    dict(seed=3, absent_true=(0, 6), absent_pred=(6, 3)),  # 6 absent from both
    dict(seed=4, k=3, n=50),
]


@pytest.mark.parametrize("case", CASES)
def test_every_metric_equals_sklearn(case):
    k = case.get("k", 7)
    y, scores = _data(**case)
    pred = scores.argmax(1)
    names = [f"c{i}" for i in range(k)]
    m = _compute(y, scores, names)
    labels = list(range(k))

    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro",
                                                       zero_division=0))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    assert [c["precision"] for c in m["per_class"]] == pytest.approx(p)
    assert [c["recall"] for c in m["per_class"]] == pytest.approx(r)
    assert [c["f1"] for c in m["per_class"]] == pytest.approx(f)
    assert [c["support"] for c in m["per_class"]] == s.tolist()
    assert [c["predicted"] for c in m["per_class"]] == np.bincount(pred, minlength=k).tolist()
    assert [c["class"] for c in m["per_class"]] == names
    cm = skm.confusion_matrix(y, pred, labels=labels)
    assert m["confusion_matrix"] == cm.tolist()
    assert np.shape(m["confusion_matrix"]) == (k, k)
    assert m["true_distribution"] == cm.sum(1).tolist()
    assert m["predicted_distribution"] == cm.sum(0).tolist()
    present = s > 0
    assert m["geometric_mean_recall"] == pytest.approx(gmean(r[present]))
    if k > 5:
        assert m["top_k_accuracy"] == {
            "5": pytest.approx(skm.top_k_accuracy_score(y, scores, k=5, labels=labels))}
    else:
        assert m["top_k_accuracy"] == {}


def test_top_k_is_the_share_of_true_labels_among_the_k_highest_scores():
    y, scores = _data(7, k=6)
    m = _compute(y, scores, list("abcdef"), top_k=(1, 2, 3, 6, 9))
    top = np.argsort(-scores, axis=1)
    expected = {str(t): np.mean([y[i] in top[i, :t] for i in range(len(y))])
                for t in (1, 2, 3)}  # k >= number of classes is left out
    assert m["top_k_accuracy"] == pytest.approx(expected)


def test_schema_keys_and_json_round_trip():
    y, scores = _data(5)
    m = _compute(y, scores, [f"c{i}" for i in range(7)], train_counts=[500, 200, 101, 100,
                                                                      20, 19, 1])
    assert SCHEMA <= set(m)
    assert all(PER_CLASS | {"train_count", "shot"} <= set(row) for row in m["per_class"])
    assert json.loads(json.dumps(m, allow_nan=False)) == m


def test_predicted_ints_give_the_same_metrics_as_scores_without_top_k():
    y, scores = _data(6)
    names = [f"c{i}" for i in range(7)]
    from_scores = _compute(y, scores, names)
    from_ints = _compute(y, scores.argmax(1), names)
    assert from_ints["top_k_accuracy"] == {}
    from_scores.pop("top_k_accuracy"), from_ints.pop("top_k_accuracy")
    assert from_ints == from_scores


def test_one_hot_labels_equal_sparse_labels():
    y, scores = _data(8)
    names = [f"c{i}" for i in range(7)]
    assert _compute(np.eye(7)[y], scores, names) == _compute(y, scores, names)


def test_balanced_accuracy_leaves_out_classes_absent_from_y_true_and_warns():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])  # class 2 predicted but never true
    with pytest.warns(UserWarning, match=r"no samples in `y_true`.*'c'"):
        m = compute_metrics(y, pred, ["a", "b", "c"])
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["per_class"][2] == {"class": "c", "support": 0, "precision": 0.0,
                                 "recall": 0.0, "f1": 0.0, "predicted": 1}
    assert m["confusion_matrix"] == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]


def test_geometric_mean_is_zero_when_a_present_class_has_zero_recall():
    m = compute_metrics([0, 0, 1, 1, 2], [0, 0, 1, 1, 0], ["a", "b", "c"])
    assert m["geometric_mean_recall"] == 0.0
    m = compute_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 2], ["a", "b", "c"])
    assert m["geometric_mean_recall"] == pytest.approx((0.5 * 1 * 1) ** (1 / 3))


def test_shot_groups_use_strict_many_and_few_thresholds():
    counts = [101, 100, 20, 19, 0]
    assert shot_groups(counts).tolist() == ["many", "medium", "medium", "few", "few"]
    assert shot_groups(counts, (50, 10)).tolist() == ["many", "many", "medium", "medium",
                                                      "few"]
    with pytest.raises(ConfigError, match="shot_thresholds"):
        shot_groups(counts, (10, 50))


def test_shot_accuracy_is_mean_recall_within_each_group():
    y, scores = _data(9, n=400, absent_true=(6,))
    pred = scores.argmax(1)
    counts = [1000, 300, 100, 50, 20, 5, 2]  # many: 0,1  medium: 2,3,4  few: 5,6
    m = _compute(y, scores, [f"c{i}" for i in range(7)], train_counts=counts)
    cm = skm.confusion_matrix(y, pred, labels=range(7))
    recall = np.diag(cm) / np.maximum(cm.sum(1), 1)
    assert m["many_shot_accuracy"] == pytest.approx(recall[[0, 1]].mean())
    assert m["medium_shot_accuracy"] == pytest.approx(recall[[2, 3, 4]].mean())
    assert m["few_shot_accuracy"] == pytest.approx(recall[5])  # class 6 has no samples
    assert [r["shot"] for r in m["per_class"]] == ["many"] * 2 + ["medium"] * 3 + ["few"] * 2
    assert m["shot_thresholds"] == [100, 20]


def test_empty_shot_group_is_none_and_counts_accept_a_dict_by_name():
    y, scores = _data(10, k=3)
    names = ["a", "b", "c"]
    by_list = _compute(y, scores, names, train_counts=[500, 300, 200])
    by_dict = _compute(y, scores, names, train_counts={"c": 200, "a": 500, 1: 300})
    assert by_list == by_dict
    assert by_list["medium_shot_accuracy"] is None and by_list["few_shot_accuracy"] is None
    assert "many_shot_accuracy" not in _compute(y, scores, names)


def test_docstring_example():
    assert compute_metrics([0, 1, 1], [0, 1, 0], ["a", "b"])["balanced_accuracy"] == 0.75


@pytest.mark.parametrize("y_true, y_pred, names, kw, error, match", [
    ([0, 1, 3], [0, 1, 1], ["a", "b"], {}, DataError, r"`y_true`.*0\.\.1"),
    ([0, 1], [0, 1, 1], ["a", "b"], {}, DataError, "2 samples"),
    ([0, 1], np.zeros((2, 3)), ["a", "b"], {}, DataError, "3 columns"),
    ([0, 1], [[0.0, np.nan], [1.0, 0.0]], ["a", "b"], {}, DataError, "NaN"),
    ([0.5, 1], [0, 1], ["a", "b"], {}, DataError, "class indices"),
    ([], [], ["a", "b"], {}, DataError, "empty"),
    ([0], [0], ["a"], {}, ConfigError, "at least 2"),
    ([0, 1], [0, 1], ["a", "b"], {"train_counts": [1, 2, 3]}, ConfigError, "train_counts"),
    ([0, 1], [0, 1], ["a", "b"], {"train_counts": {"z": 1}}, ConfigError, "'z'"),
])
def test_bad_input_names_the_argument(y_true, y_pred, names, kw, error, match):
    with pytest.raises(error, match=match):
        compute_metrics(y_true, y_pred, names, **kw)


def _replicated(y, pred, reps):
    """The test set with every sample of class c repeated reps[c] times."""
    r = np.asarray(reps)[y]
    return np.repeat(y, r), np.repeat(pred, r)


def test_prior_shift_reweighting_equals_a_resampled_test_set():
    from longtail.metrics import prior_shift_curve

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [10, 20, 40])
    pred = np.where(rng.random(y.size) < 0.6, y, rng.integers(0, 3, y.size))
    cm = skm.confusion_matrix(y, pred)
    # training prior 16:4:1; on supports 10:20:40 the test set matches it when
    # class c is repeated (64, 8, 1) times, uniform at (4, 2, 1), reversed at (1, 2, 4)
    curve = prior_shift_curve(cm, [400, 100, 25], steps=3)
    assert curve["t"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    for point, reps in ((0, (64, 8, 1)), (2, (4, 2, 1)), (4, (1, 2, 4))):
        yr, pr = _replicated(y, pred, reps)
        assert curve["accuracy"][point] == pytest.approx(skm.accuracy_score(yr, pr))
        assert curve["balanced_accuracy"][point] == pytest.approx(
            skm.balanced_accuracy_score(yr, pr))
        assert curve["macro_f1"][point] == pytest.approx(skm.f1_score(yr, pr, average="macro"))
        np.testing.assert_allclose(curve["priors"][point],
                                   np.bincount(yr) / yr.size)


def test_group_confusion_counts_head_to_tail():
    from longtail.metrics import group_confusion

    y, scores = _data(5, n=400, k=6)
    pred = scores.argmax(1)
    groups = shot_groups([500, 300, 60, 30, 10, 5])
    gc = group_confusion(skm.confusion_matrix(y, pred, labels=range(6)), groups)
    assert gc["groups"] == ["many", "medium", "few"]
    for i, a in enumerate(gc["groups"]):
        for j, b in enumerate(gc["groups"]):
            assert gc["matrix"][i][j] == np.sum((groups[y] == a) & (groups[pred] == b))
    m = _compute(y, scores, list("abcdef"), train_counts=[500, 300, 60, 30, 10, 5])
    assert m["group_confusion"] == gc
    assert m["prior_shift"]["balanced_accuracy"][0] == pytest.approx(m["balanced_accuracy"])


# ------------------------------------------------------------------ many classes
def _many(k=1500, n=6000, seed=3):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % k)  # every class present
    scores = rng.normal(size=(n, k))
    scores[np.arange(n), y] += rng.normal(2.0, 1.0, n)  # right often, not always
    counts = rng.integers(1, 400, k)
    return y, scores, counts


def test_above_the_limit_the_confusion_matrix_is_sparse_and_exact():
    from longtail.metrics import (SPARSE_CONFUSION_ABOVE, confusion_entries, group_confusion,
                                  prior_shift_curve)

    k = SPARSE_CONFUSION_ABOVE + 500
    y, scores, counts = _many(k)
    pred = scores.argmax(1)
    names = [f"c{i}" for i in range(k)]
    m = compute_metrics(y, scores, names, train_counts=counts, top_k=(5,))
    reference_bal = skm.balanced_accuracy_score(y, pred)
    cm = m["confusion_matrix"]
    assert cm["format"] == "sparse" and cm["shape"] == [k, k]
    dense = skm.confusion_matrix(y, pred, labels=range(k))
    rebuilt = np.zeros((k, k), np.int64)
    rebuilt[cm["true"], cm["predicted"]] = cm["count"]
    np.testing.assert_array_equal(rebuilt, dense)
    assert len(cm["count"]) == np.count_nonzero(dense)  # only the non-zero cells
    assert json.loads(json.dumps(m)) == m
    assert m["balanced_accuracy"] == pytest.approx(reference_bal, abs=1e-12)
    assert m["top_k_accuracy"]["5"] == pytest.approx(
        skm.top_k_accuracy_score(y, scores, k=5, labels=range(k)), abs=1e-12)
    groups = shot_groups(counts)
    assert m["group_confusion"] == group_confusion(dense, groups)
    # both forms read the same, and the prior-shift curve agrees with the dense one
    for a, b in zip(confusion_entries(cm), confusion_entries(dense)):
        np.testing.assert_array_equal(a, b)
    curve = prior_shift_curve(dense, counts)  # every class has samples (see _many)
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        np.testing.assert_allclose(m["prior_shift"][key], curve[key], rtol=1e-12)


def test_at_the_limit_the_confusion_matrix_stays_dense():
    from longtail.metrics import SPARSE_CONFUSION_ABOVE

    k = SPARSE_CONFUSION_ABOVE
    y, scores, _ = _many(k, n=3000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = compute_metrics(y, scores.argmax(1), [str(i) for i in range(k)])
    assert m["confusion_matrix"] == skm.confusion_matrix(y, scores.argmax(1),
                                                         labels=range(k)).tolist()


def test_many_classes_memory_is_linear_not_quadratic():
    import tracemalloc

    k, n = 4000, 4000  # a dense int64 matrix would be 128 MB, its JSON list more
    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, k, n), rng.integers(0, k, n)
    names = [f"c{i}" for i in range(k)]
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = compute_metrics(y, pred, names, train_counts=np.full(k, 50))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, peak
    assert sum(m["confusion_matrix"]["count"]) == n
