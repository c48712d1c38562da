import json
import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from longtail.errors import ConfigError, DataError  # noqa: E402
from longtail.evaluation import EvaluationReport, evaluate  # noqa: E402
from longtail.sources import FileSource  # noqa: E402

K = 4
NAMES = ["ant", "bee", "cat", "dog"]


def _model(activation=None, units=K, seed=0):
    from longtail._seed import seed_everything

    seed_everything(seed)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(units, activation=activation)])


def _arrays(n=70, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype("float32"), rng.integers(0, K, n)


def _batches(x, y, size=16, weights=False):
    out = []
    for i in range(0, len(x), size):
        batch = (x[i:i + size], y[i:i + size])
        out.append(batch + (np.ones(len(batch[1])),) if weights else batch)
    return out


def _quiet(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate(*args, **kw)


def test_metrics_equal_sklearn_on_the_argmax_of_predict():
    x, y = _arrays()
    model = _model()
    report = _quiet(model, _batches(x, y), class_names=NAMES)
    pred = model.predict(x, verbose=0).argmax(1)
    m = report.to_dict()
    assert m["classes"] == NAMES
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=range(K)).tolist()
    np.testing.assert_array_equal(report.y_true, y)
    np.testing.assert_array_equal(report.y_pred, pred)
    np.testing.assert_allclose(report.y_score, model.predict(x, verbose=0), rtol=1e-5,
                               atol=1e-6)
    assert m["posthoc_tau"] is None


def test_weighted_one_hot_batches_give_the_same_report():
    x, y = _arrays()
    model = _model()
    plain = _quiet(model, _batches(x, y), class_names=NAMES).to_dict()
    one_hot = _quiet(model, _batches(x, np.eye(K)[y], weights=True),
                     class_names=NAMES).to_dict()
    assert one_hot == plain


def test_class_names_come_from_the_loader_dataset_then_default_to_indices():
    x, y = _arrays()

    class Loader(list):
        class dataset:  # noqa: N801 - a stand-in for loader.dataset
            class_names = NAMES

    assert _quiet(_model(), Loader(_batches(x, y))).class_names == NAMES
    assert _quiet(_model(), _batches(x, y)).class_names == ["0", "1", "2", "3"]


def test_a_dataset_is_read_through_a_sequential_loader_sized_for_the_model():
    x, y = _arrays(n=40)
    calls = []

    class FakeDataset:  # what evaluate relies on of longtail.Dataset
        class_names, class_counts = NAMES, np.bincount(y, minlength=K)
        source = FileSource(pa.array([], pa.string()))  # images of no fixed size

        def __len__(self):
            return len(y)

        def loader(self, batch_size, **options):
            calls.append(dict(options, batch_size=batch_size))
            return _batches(x.reshape(-1, 1, 5, 1), y, size=batch_size)

    model = keras.Sequential([keras.Input((1, 5, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(K)])
    report = _quiet(model, FakeDataset(), batch_size=8, seed=3)
    assert calls == [{"sampling": "sequential", "label_mode": "int", "image_size": (1, 5),
                      "seed": 3, "batch_size": 8}]
    assert report.class_names == NAMES and len(report.y_true) == 40


def test_posthoc_adjustment_moves_predictions_from_head_to_tail_classes():
    x, y = _arrays(n=200)
    model = _model()
    counts = np.array([1000, 100, 10, 1])
    plain = _quiet(model, _batches(x, y), class_names=NAMES, train_counts=counts)
    adjusted = _quiet(model, _batches(x, y), class_names=NAMES, train_counts=counts,
                      posthoc_tau=1.0)
    logits = model.predict(x, verbose=0)
    priors = counts / counts.sum()
    np.testing.assert_allclose(adjusted.y_score, logits - np.log(priors), rtol=1e-5,
                               atol=1e-5)
    before, after = (r.to_dict()["predicted_distribution"] for r in (plain, adjusted))
    assert after[0] < before[0] and after[3] > before[3]
    assert adjusted.to_dict()["posthoc_tau"] == 1.0


def test_posthoc_on_probabilities_adjusts_their_log():
    x, y = _arrays()
    model = _model("softmax")
    priors = np.array([0.7, 0.2, 0.05, 0.05])
    report = _quiet(model, _batches(x, y), priors=priors, posthoc_tau=0.5)
    log_p = np.log(model.predict(x, verbose=0))
    np.testing.assert_allclose(report.y_score, log_p - 0.5 * np.log(priors), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(report.logits, log_p, rtol=1e-4, atol=1e-4)


def test_posthoc_without_priors_is_refused():
    x, y = _arrays()
    with pytest.raises(ConfigError, match="priors"):
        evaluate(_model(), _batches(x, y), posthoc_tau=1.0)


def test_a_single_sigmoid_unit_is_two_classes():
    x, _ = _arrays()
    y = (x[:, 0] > 0).astype(int)
    model = _model("sigmoid", units=1)
    report = _quiet(model, _batches(x, y))
    pred = (model.predict(x, verbose=0)[:, 0] > 0.5).astype(int)
    assert report.to_dict()["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert report.y_score.shape == (len(x), 2)


def test_save_writes_metrics_json_atomically(tmp_path):
    x, y = _arrays()
    report = _quiet(_model(), _batches(x, y), class_names=NAMES)
    path = report.save(tmp_path / "run")
    assert os.listdir(tmp_path / "run") == ["metrics.json"]  # no temp file left
    with open(path) as f:
        saved = json.load(f)
    from longtail.evaluation import rounded

    assert saved == rounded(report.to_dict())  # floats to 10 significant digits
    assert saved["balanced_accuracy"] == pytest.approx(report.to_dict()["balanced_accuracy"],
                                                       rel=1e-9)
    assert isinstance(report, EvaluationReport) and "accuracy" in repr(report)


@pytest.mark.parametrize("data, kw, error, match", [
    ([], {}, DataError, "no batches"),
    ([np.zeros((2, 5))], {}, DataError, r"\(x, y\)"),
    ("batches", {"class_names": ["a", "b"]}, DataError, "4 scores"),
    ("batches", {"image_size": (8, 8)}, ConfigError, "image_size"),
])
def test_bad_input_is_named(data, kw, error, match):
    if data == "batches":
        data = _batches(*_arrays())
    with pytest.raises(error, match=match):
        evaluate(_model(), data, **kw)


class _Fixed:
    """A model whose outputs are given rows, one batch after another."""

    def __init__(self, rows):
        self.rows, self.at = np.asarray(rows, dtype=np.float32), 0

    def predict_on_batch(self, x):
        out = self.rows[self.at:self.at + len(x)]
        self.at += len(x)
        return out


# A float16 softmax: rows in [0, 1] summing to 1 within 5e-4 (float32 sums within 1e-6).
HALF = np.array([[0.7, 0.2, 0.0995], [0.1, 0.1, 0.7995], [0.3325, 0.3335, 0.3335]])


@pytest.mark.parametrize("rows,probabilities", [
    (HALF, True),
    (HALF * (1.0 + 2e-3) / HALF.sum(axis=1, keepdims=True), False),  # sums to 1.002
    (np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [0.0, 0.0, 1.0]]), False),
])
def test_evaluate_and_predict_share_one_probability_test(rows, probabilities, tmp_path):
    from PIL import Image

    from longtail.evaluation import looks_like_probabilities, to_logits
    from longtail.predict import predict_files

    assert looks_like_probabilities(rows) is probabilities
    logits = np.log(rows.astype(np.float32)) if probabilities else rows.astype(np.float32)
    report = _quiet(_Fixed(rows), [(np.zeros((3, 1)), np.array([0, 2, 1]))],
                    class_names=["a", "b", "c"], bootstrap=False)
    np.testing.assert_allclose(report.logits, logits, rtol=1e-6)
    np.testing.assert_allclose(to_logits(rows), report.logits, rtol=1e-6)
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(paths[-1])
    text, failed = predict_files(_Fixed(rows), paths, class_names=["a", "b", "c"],
                                 image_size=(4, 4), batch_size=3, workers=1)
    shown = [float(r.split(",")[2]) for r in text.splitlines()[1:]]
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(shown, expected.max(axis=1), atol=1e-6)
    assert not failed


def _many_class_case(k=1500, n=3000, seed=0):
    """Float32 model outputs for k > SPARSE_CONFUSION_ABOVE classes (several row
    blocks of the score passes), with the true class often on top."""
    from longtail.metrics import SPARSE_CONFUSION_ABOVE

    assert k > SPARSE_CONFUSION_ABOVE
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    logits[np.arange(n), y] += rng.uniform(0, 5, n).astype(np.float32)
    return logits, y


def test_float32_scores_give_the_float64_reference_metrics_on_many_classes():
    from scipy.special import log_softmax, softmax

    from longtail.calibration import calibration_summary

    logits, y = _many_class_case()
    k = logits.shape[1]
    names = [f"c{i}" for i in range(k)]
    counts = np.random.default_rng(1).integers(5, 300, k)
    ref = logits.astype(np.float64)  # what evaluate held before: the outputs in float64
    report = _quiet(_Fixed(logits), _batches(logits, y, size=128), class_names=names,
                    train_counts=counts, bootstrap=False)
    assert report.y_score.dtype == np.float32 and report.logits is report.y_score
    m = report.to_dict()
    pred = ref.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred),
                                                   abs=1e-12)
    assert m["macro_f1"] == pytest.approx(
        skm.f1_score(y, pred, average="macro", zero_division=0), abs=1e-12)
    assert m["top_k_accuracy"]["5"] == pytest.approx(
        skm.top_k_accuracy_score(y, ref, k=5, labels=range(k)), abs=1e-12)

    # post-hoc adjustment in float32 against the same in float64
    priors = counts / counts.sum()
    adjusted = _quiet(_Fixed(logits), _batches(logits, y, size=128), class_names=names,
                      train_counts=counts, posthoc_tau=1.0, bootstrap=False)
    ref_adjusted = (ref - np.log(priors)).argmax(axis=1)
    assert adjusted.to_dict()["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(y, ref_adjusted), abs=1e-12)

    # calibration from float32 logits, a block at a time, against float64 whole arrays
    val_logits, val_y = _many_class_case(seed=2)
    groups = np.where(counts > 100, "many", np.where(counts < 20, "few", "medium"))
    s = calibration_summary(report.logits, y, groups, val_logits=val_logits, val_true=val_y)
    val_ref = val_logits.astype(np.float64)
    t = s["temperature"]
    assert s["val_nll"]["after"] == pytest.approx(
        -log_softmax(val_ref / t, axis=1)[np.arange(val_y.size), val_y].mean(), rel=1e-9)
    probs = softmax(ref / t, axis=1)
    edges = np.linspace(0, 1, 16)
    for c in (0, 7, k - 1):  # the loop reference of tests/test_calibration.py
        total = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            inside = (probs[:, c] >= lo) & ((probs[:, c] < hi) | (hi == 1.0))
            if inside.any():
                total += inside.sum() * abs((y[inside] == c).mean() - probs[inside, c].mean())
        assert s["ece_per_class"]["after"][c] == pytest.approx(total / y.size, rel=1e-6,
                                                                abs=1e-12)
    head = np.flatnonzero(groups == "many")
    pooled = probs[:, head].ravel()
    assert sum(s["reliability"]["head"]["after"]["count"]) == pooled.size
    assert np.average(s["reliability"]["head"]["after"]["confidence"],
                      weights=s["reliability"]["head"]["after"]["count"]) == pytest.approx(
        pooled.mean(), rel=1e-9)


def test_probabilities_in_float32_give_the_float64_reference_on_many_classes():
    from scipy.special import softmax

    logits, y = _many_class_case(n=1200, seed=3)
    probs = softmax(logits.astype(np.float64), axis=1).astype(np.float32)
    report = _quiet(_Fixed(probs), _batches(probs, y, size=100),
                    class_names=[str(i) for i in range(probs.shape[1])], bootstrap=False)
    assert report.y_score.dtype == report.logits.dtype == np.float32
    np.testing.assert_allclose(report.logits, np.log(probs.astype(np.float64)), rtol=1e-6)
    pred = probs.argmax(axis=1)
    assert report.to_dict()["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(y, pred), abs=1e-12)


@pytest.mark.parametrize("sizes,sized", [
    ([16, 16, 5], True),     # written into one array sized by the first batch
    ([5, 16, 16], True),     # a later batch does not fit: kept apart, joined at the end
    ([16, 16, 5], False),    # no len(): joined at the end
])
def test_predict_batches_keeps_float32_rows_in_order(sizes, sized):
    from longtail.evaluation import predict_batches

    rng = np.random.default_rng(0)
    out = rng.normal(size=(sum(sizes), 3))
    y = rng.integers(0, 3, len(out))
    edges = np.cumsum([0] + sizes)
    batches = [(np.zeros((hi - lo, 1)), y[lo:hi]) for lo, hi in zip(edges[:-1], edges[1:])]
    model = _Fixed(out)
    got_y, got = predict_batches(model, batches if sized else iter(batches))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, out.astype(np.float32))
    np.testing.assert_array_equal(got_y, y)
    model.at = 0
    _, top = predict_batches(model, batches, reduce=lambda rows: rows.argmax(axis=1))
    np.testing.assert_array_equal(top, out.argmax(axis=1))
