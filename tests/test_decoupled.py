"""Classifier-level methods: tau-norm, cRT, weight balancing (longtail.decoupled)."""

import json

import keras
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

import longtail as lt
from longtail.decoupled import (
    CRTParams,
    StageContext,
    TauNormParams,
    WeightBalancingParams,
    balance_weights,
    find_classifier,
    retrain_classifier,
    tau_normalise,
)
from longtail.errors import ConfigError
from longtail.losses import WeightedCrossentropy
from longtail.posthoc import tau_normalize, tune_tau_norm

COUNTS = (120, 60, 24, 12, 6)


def _features_dataset(counts=COUNTS, seed=0, d=6):
    """Gaussian blobs, one per class, overlapping: the prior matters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, (len(counts), d))
    x = np.concatenate([centres[c] + rng.normal(0, 1.0, (n, d)) for c, n in enumerate(counts)])
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return lt.Dataset.from_arrays(x.astype(np.float32), y,
                                  class_names=[f"c{i}" for i in range(len(counts))])


def _model(d=6, k=len(COUNTS), batchnorm=True, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((d,))
    x = keras.layers.Dense(16, name="hidden")(inputs)
    if batchnorm:
        x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    return keras.Model(inputs, keras.layers.Dense(k, name="logits")(x))


def _context(train, val, recorded, first=2, second=2, **kw):
    def make_loader(sampling, class_weight):
        loader = train.loader(batch_size=32, sampling=sampling, class_weight=class_weight,
                              seed=3, num_workers=0)
        recorded.append(loader)
        return loader

    return StageContext(make_loader=make_loader,
                        val_loader=val.loader(batch_size=64, sampling="sequential",
                                              num_workers=0),
                        make_loss=lambda: WeightedCrossentropy([1.0] * train.num_classes),
                        first_epochs=first, second_epochs=second, learning_rate=1e-2,
                        seed=0, **kw)


# ----------------------------------------------------------------- tau-norm
def test_tau_normalize_against_the_formula():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(7, 4)) * np.array([5.0, 1.0, 0.3, 2.0])  # (d, k)
    np.testing.assert_array_equal(tau_normalize(kernel, 0.0), kernel)
    unit = tau_normalize(kernel, 1.0)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=0), np.ones(4), rtol=1e-12)
    norms = np.sqrt((kernel ** 2).sum(axis=0))
    np.testing.assert_allclose(tau_normalize(kernel, 0.6), kernel / norms ** 0.6, rtol=1e-12)
    # norm of the result is ||w||^(1 - tau)
    np.testing.assert_allclose(np.linalg.norm(tau_normalize(kernel, 0.6), axis=0),
                               norms ** 0.4, rtol=1e-12)


def test_tau_normalize_keeps_a_zero_vector_and_refuses_a_negative_tau():
    kernel = np.array([[0.0, 3.0], [0.0, 4.0]])
    np.testing.assert_allclose(tau_normalize(kernel, 1.0), [[0.0, 0.6], [0.0, 0.8]], rtol=1e-12)
    with pytest.raises(ConfigError, match="tau"):
        tau_normalize(kernel, -1.0)


def test_tune_tau_norm_picks_the_best_balanced_accuracy():
    rng = np.random.default_rng(1)
    kernel = np.array([[4.0, 0.0], [0.0, 1.0]])  # class 0's vector is 4x longer
    x = rng.normal(0, 0.3, (200, 2)) + np.repeat([[1.0, 0.0], [0.0, 1.5]], 100, axis=0)
    y = np.repeat([0, 1], 100)
    taus = np.linspace(0, 2, 21)
    tau, scores = tune_tau_norm(x, y, kernel, None, taus)
    expected = [balanced_accuracy_score(y, np.argmax(x @ (kernel / np.linalg.norm(
        kernel, axis=0) ** t), axis=1)) for t in taus]
    np.testing.assert_allclose(scores, expected)
    assert tau == taus[int(np.argmax(expected))] and tau > 0
    assert scores.max() > scores[0]


def test_tune_tau_norm_over_batches_equals_the_whole_validation_set():
    from longtail.posthoc import tune_tau_norm_batches

    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(5, 3)) * [3.0, 1.0, 0.5]
    x = rng.normal(size=(301, 5))
    y = rng.choice(3, size=301, p=[0.6, 0.3, 0.1])
    bias = rng.normal(size=3)
    whole = tune_tau_norm(x, y, kernel, bias)
    cuts = [0, 7, 100, 250, 301]
    parts = tune_tau_norm_batches(((x[a:b], np.eye(3)[y[a:b]]) for a, b in
                                   zip(cuts[:-1], cuts[1:])), kernel, bias)
    assert parts[0] == whole[0]
    np.testing.assert_array_equal(parts[1], whole[1])


def test_tau_norm_with_tau_0_and_kept_bias_leaves_the_logits_unchanged():
    ds = _features_dataset()
    model = _model()
    model(np.zeros((1, 6), np.float32))
    x = ds.features[:50]
    before = np.asarray(model.predict_on_batch(x))
    info, rows = tau_normalise(model, _context(ds, ds, []),
                               TauNormParams(taus=(0.0,), bias="keep"))
    assert info["tau"] == 0.0 and rows == []
    np.testing.assert_array_equal(np.asarray(model.predict_on_batch(x)), before)


def test_tau_norm_with_tau_1_gives_unit_class_vectors_and_drops_the_bias():
    ds = _features_dataset()
    model = _model()
    classifier = model.get_layer("logits")
    classifier.bias.assign(np.log(np.array(COUNTS) / sum(COUNTS)).astype(np.float32))
    kernel = classifier.kernel.numpy().copy()
    info, _ = tau_normalise(model, _context(ds, ds, []), TauNormParams(taus=(1.0,)))
    np.testing.assert_allclose(np.linalg.norm(classifier.kernel.numpy(), axis=0),
                               np.ones(len(COUNTS)), rtol=1e-6)
    np.testing.assert_allclose(classifier.kernel.numpy(),
                               kernel / np.linalg.norm(kernel, axis=0), rtol=1e-6)
    np.testing.assert_array_equal(classifier.bias.numpy(), np.zeros(len(COUNTS)))
    assert info == {"method": "tau-norm", "tau": 1.0, "bias": "drop", "taus": [1.0],
                    "val_balanced_accuracy": info["val_balanced_accuracy"]}


def test_tau_norm_intermediate_tau_against_numpy():
    ds = _features_dataset()
    model = _model(batchnorm=False)
    model(np.zeros((1, 6), np.float32))
    hidden = keras.Model(model.inputs, model.get_layer("logits").input)
    kernel = model.get_layer("logits").kernel.numpy().astype(np.float64)
    bias = model.get_layer("logits").bias.numpy().astype(np.float64)
    x = ds.features[:40]
    h = np.asarray(hidden.predict_on_batch(x), np.float64)
    tau_normalise(model, _context(ds, ds, []), TauNormParams(taus=(0.7,), bias="keep"))
    expected = h @ (kernel / np.linalg.norm(kernel, axis=0) ** 0.7) + bias
    np.testing.assert_allclose(np.asarray(model.predict_on_batch(x)), expected, rtol=1e-4,
                               atol=1e-5)


# ------------------------------------------------------------ the classifier
def test_find_classifier_walks_back_through_parameter_free_layers():
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(4, name="head")
    outputs = keras.layers.Activation("linear")(dense(keras.layers.Dense(5)(inputs)))
    assert find_classifier(keras.Model(inputs, outputs)) is dense
    assert find_classifier(_model()).name == "logits"


def test_find_classifier_refuses_a_layer_with_weights_after_the_dense():
    inputs = keras.Input((3,))
    outputs = keras.layers.BatchNormalization(name="after")(keras.layers.Dense(4)(inputs))
    with pytest.raises(ConfigError, match="'after'"):
        find_classifier(keras.Model(inputs, outputs))


def test_find_classifier_refuses_a_classifier_inside_a_nested_model():
    inner = _model()
    inputs = keras.Input((6,))
    with pytest.raises(ConfigError, match="nested model"):
        find_classifier(keras.Model(inputs, inner(inputs)))


# ------------------------------------------------------------------- cRT
def test_crt_second_stage_is_class_balanced_and_keeps_the_representation():
    train, val = _features_dataset().split(val=0.25, seed=0)
    model = _model()
    model.compile(optimizer="adam", loss=WeightedCrossentropy([1.0] * 5))
    model.fit(train.loader(batch_size=32, num_workers=0), epochs=2, verbose=0)  # stage 1
    before = {w.path: np.array(w.numpy()) for w in model.weights}
    loaders = []
    info, rows = retrain_classifier(model, _context(train, val, loaders, first=2, second=3),
                                    CRTParams())
    assert [loader.sampler_.name for loader in loaders] == ["balanced"]
    labels = train.labels
    for epoch in (2, 3, 4):  # the stage-2 epochs' plans
        per_class = np.bincount(labels[loaders[0].plan(epoch)], minlength=5)
        assert per_class.max() - per_class.min() <= 1, per_class  # uniform up to rounding
    classifier = model.get_layer("logits")
    changed = [p for p, w in before.items() if not np.array_equal(w, _value(model, p))]
    assert sorted(changed) == sorted(w.path for w in classifier.weights)
    assert [r["epoch"] for r in rows] == [2, 3, 4] and all(r["stage"] == 2 for r in rows)
    assert info["stage2_epochs"] == 3
    # the BatchNorm moving statistics are among the bit-identical weights
    assert any("moving_mean" in p for p in before) and all(
        layer.trainable for layer in model.layers)  # flags restored


def _value(model, path):
    return next(np.array(w.numpy()) for w in model.weights if w.path == path)


def test_stage_split_gives_each_stage_at_least_one_epoch():
    assert CRTParams().stages(1) == (1, 1)
    assert CRTParams().stages(10) == (8, 2)
    assert CRTParams(stage2_share=0.5).stages(9) == (5, 4)
    with pytest.raises(ConfigError, match="stage2_share"):
        CRTParams(stage2_share=1.0)


# -------------------------------------------------------- weight balancing
def test_weight_balancing_caps_every_class_vector_at_the_max_norm():
    train, val = _features_dataset().split(val=0.25, seed=0)
    model = _model()
    model(np.zeros((1, 6), np.float32))
    classifier = model.get_layer("logits")
    classifier.kernel.assign(classifier.kernel.numpy() * np.linspace(3, 0.2, 5))
    loaders = []
    info, _ = balance_weights(model, _context(train, val, loaders),
                              WeightBalancingParams(max_norm=0.5))
    norms = np.linalg.norm(classifier.kernel.numpy(), axis=0)
    assert np.all(norms <= 0.5 + 1e-5), norms
    assert info["max_norm"] == 0.5 and info["stage2_weight_decay"] == 5e-2
    assert loaders[0].sampler_.name == "shuffle"
    weights = loaders[0].class_weight_  # class-balanced: n / (k n_c)
    counts = train.class_counts
    np.testing.assert_allclose(weights, counts.sum() / (5 * counts), rtol=1e-6)


def test_weight_balancing_default_radius_is_the_median_stage_1_norm():
    train, val = _features_dataset().split(val=0.25, seed=0)
    model = _model()
    model(np.zeros((1, 6), np.float32))
    norms = np.linalg.norm(model.get_layer("logits").kernel.numpy(), axis=0)
    info, _ = balance_weights(model, _context(train, val, [], second=1),
                              WeightBalancingParams())
    assert info["max_norm"] == pytest.approx(float(np.median(norms)), rel=1e-6)
    after = np.linalg.norm(model.get_layer("logits").kernel.numpy(), axis=0)
    assert np.all(after <= np.median(norms) + 1e-5)


def test_parameter_records_refuse_bad_values():
    with pytest.raises(ConfigError, match="bias"):
        TauNormParams(bias="zero")
    with pytest.raises(ConfigError, match="taus"):
        TauNormParams(taus=(-0.1,))
    with pytest.raises(ConfigError, match="max_norm"):
        WeightBalancingParams(max_norm=0)
    json.dumps(dict(TauNormParams().__dict__))  # plain values, for config.json


# ------------------------------------------------------ through lt.train
def _table(path, counts=COUNTS, seed=0):
    ds = _features_dataset(counts, seed)
    cols = [f"f{i}" for i in range(ds.features.shape[1])]
    lines = [",".join(cols + ["label"])] + [
        ",".join(f"{v:.5f}" for v in row) + f",c{label}"
        for row, label in zip(ds.features, ds.labels)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


TRAIN = dict(batch_size=32, learning_rate=1e-2, num_workers=0, verbose=0)


class _Probe(keras.callbacks.Callback):
    """Records the optimizer's weight decay and which layers train, at each fit's start."""

    def __init__(self, fail_at=None):
        super().__init__()
        self.starts, self.fail_at = [], fail_at

    def on_train_begin(self, logs=None):
        self.starts.append({"weight_decay": float(self.model.optimizer.weight_decay),
                            "trainable": sorted(w.path for w in self.model.trainable_weights)})
        if len(self.starts) == self.fail_at:
            raise KeyboardInterrupt("killed between the stages")


@pytest.mark.slow
def test_weight_balancing_stage_1_decay_then_capped_classifier(tmp_path):
    probe = _Probe()
    result = lt.train(_table(tmp_path / "t.csv"), tmp_path / "run", balance="weight-balancing",
                      epochs=4, callbacks=[probe],
                      strategy_options={"weight-balancing": {"stage2_weight_decay": 0.01}},
                      **TRAIN)
    stage1, stage2 = probe.starts
    assert stage1["weight_decay"] == pytest.approx(5e-2)  # the record's default, whole net
    assert len(stage1["trainable"]) == 6  # dense0, dense1 and logits: kernels and biases
    assert stage2["weight_decay"] == pytest.approx(0.01)
    assert stage2["trainable"] == ["logits/bias", "logits/kernel"]
    info = json.loads((tmp_path / "run" / "config.json").read_text())["second_stage"]
    assert info["stage1_epochs"] == 3 and info["stage2_epochs"] == 1
    norms = np.linalg.norm(result.model.get_layer("logits").kernel.numpy(), axis=0)
    assert np.all(norms <= info["max_norm"] + 1e-5)
    assert info["max_norm"] == pytest.approx(np.median(info["stage1_class_norms"]))
    history = (tmp_path / "run" / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + 4  # three stage-1 epochs and one of stage 2


@pytest.mark.slow
def test_tau_norm_records_the_tuned_tau(tmp_path):
    result = lt.train(_table(tmp_path / "t.csv"), tmp_path / "run", balance="tau-norm",
                      epochs=2, **TRAIN)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    tau = metrics["second_stage"]["tau"]
    assert config["second_stage"]["tau"] == tau
    scores = metrics["second_stage"]["val_balanced_accuracy"]
    assert tau == config["second_stage"]["taus"][int(np.argmax(scores))]
    # the saved model is the tau-normalised one: its validation score is the tuned one
    assert metrics["balanced_accuracy"] == pytest.approx(max(scores), abs=1e-9)
    # metrics.json rounds to 10 significant digits
    assert result.metrics["balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"],
                                                                rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["crt", "weight-balancing"])
def test_a_run_killed_between_the_stages_resumes_to_the_same_model(name, tmp_path):
    data = _table(tmp_path / "t.csv")
    whole = lt.train(data, tmp_path / "whole", balance=name, epochs=3, **TRAIN)
    with pytest.raises(KeyboardInterrupt):
        lt.train(data, tmp_path / "cut", balance=name, epochs=3,
                 callbacks=[_Probe(fail_at=2)], **TRAIN)
    state = json.loads((tmp_path / "cut" / "checkpoints" / "state.json").read_text())
    assert state["epochs_done"] == 2 and not (tmp_path / "cut" / "model.keras").exists()
    resumed = lt.train(data, tmp_path / "cut", resume=True, **TRAIN)
    for a, b in zip(whole.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert resumed.metrics["balanced_accuracy"] == whole.metrics["balanced_accuracy"]


@pytest.mark.slow
def test_compare_runs_the_classifier_methods_on_a_feature_table(tmp_path):
    names = ["crt", "tau-norm", "weight-balancing"]
    summaries = lt.compare(_table(tmp_path / "t.csv"), names, tmp_path / "cmp", epochs=2,
                           batch_size=32, learning_rate=1e-2, num_workers=0, verbose=0)
    assert [s["strategy"] for s in summaries] == names
    for s in summaries:
        config = json.loads((tmp_path / "cmp" / s["strategy"] / "config.json").read_text())
        assert config["second_stage"]["method"] == s["strategy"]
        assert 0.0 <= s["metrics"]["balanced_accuracy"] <= 1.0


@pytest.mark.slow
def test_crt_after_fine_tuning_a_backbone(tmp_path):
    """The backbone's head/fine-tune schedule spans stage 1; stage 2 trains the logits only."""
    from conftest import make_images

    train = make_images(tmp_path / "train", (12, 6, 4), size=32, seed=0)
    val = make_images(tmp_path / "val", (4, 4, 4), size=32, seed=1)
    probe = _Probe()
    result = lt.train(train, tmp_path / "run", val=val, balance="crt", model="efficientnet-lite0",
                      weights="none", image_size=32, batch_size=8, augment="none", epochs=4,
                      finetune="top:2", head_epochs=1, callbacks=[probe], verbose=0)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["backbone"]["schedule"]["finetune_epochs"] == 2  # 1 + 2 = stage 1's 3
    assert config["second_stage"]["stage2_epochs"] == 1
    assert len(result.history["loss"]) == 4
    assert probe.starts[-1]["trainable"] == ["logits/bias", "logits/kernel"]
    backbone = result.model.get_layer("backbone")  # the fine-tuned blocks' flags come back
    open_layers = {layer.name for layer in backbone.layers if layer.trainable and layer.weights}
    assert any(name.startswith("_blocks_15_") for name in open_layers)
    assert not any(name.startswith("_blocks_13_") for name in open_layers)
