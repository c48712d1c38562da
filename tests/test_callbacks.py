"""Tests of longtail.callbacks: DRW on every backend, PerClassMetrics
against sklearn.metrics."""

import functools
import warnings

import keras
import numpy as np
import pytest
from _loss_backend_values import (
    BACKENDS,
    COUNTS,
    DRW_BETA,
    DRW_EPOCHS,
    DRW_LOSS,
    DRW_START,
    K,
    make_drw_data,
    result_of,
    start_backends,
)
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_recall_fscore_support

from longtail import callbacks, losses
from longtail.errors import ConfigError, DataError


def np_effective_weights(counts, beta):
    """Cui et al. 2019: (1 - beta) / (1 - beta^n), normalised to sum to k."""
    n = np.asarray(counts, dtype=np.float64)
    w = (1.0 - beta) / (1.0 - beta**n)
    return w * len(n) / w.sum()


def np_log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def np_ldam_mean_at_zero_logits(y, counts, max_margin, scale, w):
    """Mean LDAM loss of a model whose logits are all zero."""
    m = np.asarray(counts, dtype=np.float64) ** -0.25
    m = m * max_margin / m.max()
    z = np.zeros((len(y), len(counts)))
    z[np.arange(len(y)), y] = -scale * m[y]
    return np.mean(-np_log_softmax(z)[np.arange(len(y)), y] * np.asarray(w)[y])


def zero_model(loss, k=K):
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(k, kernel_initializer="zeros", bias_initializer="zeros"),
    ])
    model.compile(keras.optimizers.SGD(0.0), loss=loss)
    return model


# ---------------------------------------------------------------------------
# DeferredReweighting
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _start_backend_runs():
    start_backends()  # the other backends run while this module's tests do


def test_drw_creates_weights_for_focal_and_resumes_at_initial_epoch():
    x, y = make_drw_data()
    loss = losses.Focal(gamma=2.0)  # no per-class alpha: no weights yet
    model = zero_model(loss)
    drw = callbacks.DeferredReweighting(COUNTS, start_epoch=2, beta=DRW_BETA)
    history = model.fit(x, y, batch_size=16, epochs=3, initial_epoch=1, verbose=0,
                        callbacks=[drw], shuffle=False)
    per_sample = (1 - 1 / K) ** 2 * np.log(K)  # focal term at uniform p = 1/K
    weights = np_effective_weights(COUNTS, DRW_BETA)
    assert history.history["loss"] == pytest.approx(
        [per_sample, per_sample * weights[y].mean()], rel=1e-5)
    assert loss.get_class_weight() == pytest.approx(weights)


def test_drw_model_still_saves_loads_and_evaluates(tmp_path):
    x, y = make_drw_data()
    model = zero_model(losses.LDAM(COUNTS, scale=1.0))
    drw = callbacks.DeferredReweighting(COUNTS, start_epoch=0)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[drw])
    assert isinstance(model.evaluate(x, y, verbose=0), float)  # no extra outputs
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    # The weights are training state, not configuration: back to the constructor's.
    assert loaded.loss.get_class_weight() == pytest.approx(np.ones(K))
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(
        np_ldam_mean_at_zero_logits(y, COUNTS, 0.5, 1.0, np.ones(K)), rel=1e-5)


def test_drw_attached_before_compile_rebuilds_the_train_step():
    x, y = make_drw_data()
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(K, kernel_initializer="zeros", bias_initializer="zeros"),
    ])
    drw = callbacks.DeferredReweighting(COUNTS, start_epoch=1, beta=DRW_BETA)
    # A CallbackList made before compile: fit does not call set_model again.
    callback_list = keras.callbacks.CallbackList([drw], add_history=True, model=model)
    model.compile(keras.optimizers.SGD(0.0), loss=losses.LDAM(COUNTS, scale=1.0))
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=callback_list)
    weights = np_effective_weights(COUNTS, DRW_BETA)
    assert history.history["loss"] == pytest.approx([
        np_ldam_mean_at_zero_logits(y, COUNTS, 0.5, 1.0, np.ones(K)),
        np_ldam_mean_at_zero_logits(y, COUNTS, 0.5, 1.0, weights)], rel=1e-5)


def test_track_loss_state_is_idempotent_and_follows_recompile():
    model = zero_model(losses.WeightedCrossentropy(np.ones(K)))
    n_metrics = len(model.metrics)
    first = callbacks.track_loss_state(model)
    callbacks.track_loss_state(model)
    assert len(model.metrics) == n_metrics + 1
    assert model.metrics[-1].variables[0] is first[0]._state.class_weight
    model.compile(keras.optimizers.SGD(0.0), loss=losses.LDAM(COUNTS))
    second = callbacks.track_loss_state(model)
    tracked = [m for m in model.metrics if m.variables
               and m.variables[0] is second[0]._state.class_weight]
    assert len(tracked) == 1
    assert all(m is not first[0]._state for m in model.metrics)


def test_drw_refuses_unweighted_losses_and_wrong_class_counts():
    x, y = make_drw_data()
    drw = callbacks.DeferredReweighting(COUNTS, start_epoch=1)
    with pytest.raises(ConfigError, match="DeferredReweighting needs a model compiled with"):
        zero_model(losses.LogitAdjusted(COUNTS)).fit(x, y, epochs=1, verbose=0,
                                                     callbacks=[drw])
    with pytest.raises(ConfigError, match="`class_counts` has 5 classes but loss 'ldam' has 3"):
        zero_model(losses.LDAM([10, 5, 1]), k=3).fit(x, y % 3, epochs=1, verbose=0,
                                                     callbacks=[drw])


@pytest.mark.parametrize("kwargs,message", [
    ({"start_epoch": -1}, r"`start_epoch` must be an integer >= 0; got -1"),
    ({"start_epoch": 1.5}, r"`start_epoch` must be an integer >= 0; got 1.5"),
    ({"start_epoch": 2, "beta": 1.0}, r"`beta` must be in \[0, 1\); got 1"),
    ({"start_epoch": 2, "class_counts": [0, 0]}, r"`class_counts` must not be all zero"),
])
def test_drw_bad_arguments(kwargs, message):
    kwargs = {"class_counts": COUNTS, **kwargs}
    with pytest.raises(ConfigError, match=message):
        callbacks.DeferredReweighting(**kwargs)


# ---------------------------------------------------------------------------
# PerClassMetrics
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def fixed_model(k=K, seed=0):
    """A linear model with random, fixed weights (its predictions vary).

    Shared between tests (each new model compiles its own predict step);
    the tests train it with a learning rate of 0 only.
    """
    rng = np.random.RandomState(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(k)])
    model.layers[0].set_weights([rng.randn(3, k).astype("float32") * 3,
                                 rng.randn(k).astype("float32")])
    model.compile(keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    return model


def val_data(n=60, seed=1):
    rng = np.random.RandomState(seed)
    return rng.rand(n, 3).astype("float32"), rng.randint(0, K, n)


def sklearn_values(model, x, y):
    pred = np.argmax(model.predict(x, verbose=0), axis=-1)
    return {
        "val_balanced_accuracy": balanced_accuracy_score(y, pred),
        "val_macro_f1": f1_score(y, pred, average="macro", zero_division=0),
    }, pred


def test_per_class_metrics_feed_early_stopping_with_sklearn_values():
    model = fixed_model()
    x, y = val_data()
    want, _ = sklearn_values(model, x, y)
    assert 0.05 < want["val_balanced_accuracy"] < 0.95  # a non-trivial value
    metrics = callbacks.PerClassMetrics((x, np.eye(K)[y]), batch_size=16)  # one-hot
    stop = keras.callbacks.EarlyStopping("val_balanced_accuracy", mode="max", patience=0)
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=[metrics, stop])
    # lr 0: the metric never improves, so EarlyStopping (which saw it) stops
    # after the second epoch; without the metric it would warn and run all 5.
    assert len(history.history["loss"]) == 2
    for key, value in want.items():
        assert history.history[key] == pytest.approx([value, value], rel=1e-12)


def test_per_class_metrics_over_batches_with_weights():
    model = fixed_model()
    x, y = val_data()
    want, pred = sklearn_values(model, x, y)
    batches = [(x[i:i + 16], y[i:i + 16, None], np.ones(len(y[i:i + 16])))
               for i in range(0, len(y), 16)]
    metrics = callbacks.PerClassMetrics(batches, class_names="abcde")
    metrics.set_model(model)
    logs = {}
    metrics.on_epoch_end(0, logs)
    assert logs == pytest.approx(want, rel=1e-12)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=np.arange(K), zero_division=0)
    assert metrics.per_class_ == {"class": list("abcde"), "precision": p.tolist(),
                                  "recall": r.tolist(), "f1": f.tolist(),
                                  "support": s.tolist()}


def test_per_class_metrics_over_a_py_dataset():
    model = fixed_model()
    x, y = val_data()
    want, _ = sklearn_values(model, x, y)

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return x[i * 20:(i + 1) * 20], np.eye(K)[y[i * 20:(i + 1) * 20]]

    metrics = callbacks.PerClassMetrics(Batches())
    metrics.set_model(model)
    logs = {}
    metrics.on_epoch_end(0, logs)
    assert logs == pytest.approx(want, rel=1e-12)


def test_per_class_metrics_and_evaluate_share_one_prediction_loop():
    from longtail.evaluation import evaluate, predict_batches

    model = fixed_model()
    x, y = val_data()
    batches = [(x[i:i + 16], np.eye(K)[y[i:i + 16]]) for i in range(0, len(y), 16)]
    y_true, outputs = predict_batches(model, batches, steps=3)
    np.testing.assert_array_equal(y_true, y[:48])
    np.testing.assert_allclose(outputs, model.predict(x[:48], verbose=0), rtol=1e-6)
    metrics = callbacks.PerClassMetrics(batches, steps=3)
    metrics.set_model(model)
    got_true, got_pred, k = metrics.predict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = evaluate(model, batches, steps=3, bootstrap=False)
    np.testing.assert_array_equal(got_true, report.y_true)
    np.testing.assert_array_equal(got_pred, report.y_score.argmax(axis=1))
    assert k == K and len(got_pred) == 48
    # One message for a batch of the wrong form; each caller keeps its error class.
    bad = callbacks.PerClassMetrics([[x]])
    bad.set_model(model)
    with pytest.raises(ConfigError, match=r"`validation_data` must yield \(x, y\) or"):
        bad.predict()
    with pytest.raises(DataError, match=r"`data` must yield \(x, y\) or"):
        evaluate(model, [[x]])


def test_per_class_metrics_bad_inputs():
    x, y = val_data()
    with pytest.raises(ConfigError, match="re-iterable"):
        callbacks.PerClassMetrics((b for b in [(x, y)]))
    with pytest.raises(ConfigError, match=r"\(x, y\) or \(x, y, sample_weight\); got a tuple of 4"):
        callbacks.PerClassMetrics((x, y, y, y))
    with pytest.raises(ConfigError, match="got one array"):
        callbacks.PerClassMetrics(x)
    with pytest.raises(ConfigError, match="`steps` must be an integer >= 1"):
        callbacks.PerClassMetrics((x, y), steps=0)
    metrics = callbacks.PerClassMetrics((x, y % 2))
    metrics.set_model(fixed_model(k=1))
    with pytest.raises(ConfigError, match="one output unit per class"):
        metrics.on_epoch_end(0, {})
    empty = callbacks.PerClassMetrics([])
    empty.set_model(fixed_model())
    with pytest.raises(ConfigError, match="yielded no batches"):
        empty.on_epoch_end(0, {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's "y_pred has classes not in y_true"
        metrics = callbacks.PerClassMetrics((x[:2], np.array([0, 0])))
        metrics.set_model(fixed_model())
        metrics.on_epoch_end(0, {})


# ---------------------------------------------------------------------------
# DRW under every backend's compiled train step (last: the runs overlap the
# tests above)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_drw_changes_the_compiled_loss_at_start_epoch(backend):
    drw = result_of(backend)["drw"]
    _, y = make_drw_data()
    weights = np_effective_weights(COUNTS, DRW_BETA)
    plain = np_ldam_mean_at_zero_logits(y, COUNTS, 0.5, DRW_LOSS["scale"], np.ones(K))
    weighted = np_ldam_mean_at_zero_logits(y, COUNTS, 0.5, DRW_LOSS["scale"], weights)
    assert abs(weighted - plain) > 0.1  # the switch is visible
    want = [plain] * DRW_START + [weighted] * (DRW_EPOCHS - DRW_START)
    assert drw["weights"] == pytest.approx(weights)
    # evaluate() before fit built a test step; it must not keep stale weights.
    assert drw["before"] == pytest.approx(plain, rel=1e-5)
    assert drw["loss"] == pytest.approx(want, rel=1e-5)
    assert drw["val_loss"] == pytest.approx(want, rel=1e-5)
