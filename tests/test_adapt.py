"""Label-shift estimation and adaptation on Gaussian blobs with a known posterior.

Three classes, unit-variance blobs: under the training prior ``pi`` the exact
(calibrated) logits are ``mu_c . x - |mu_c|^2 / 2 + log pi_c``. Deployment
data is drawn with another prior ``q``; EM and BBSE must recover ``q`` within
0.05 (each share; 4,000 samples: a standard error near 0.01-0.02), and the
adapted decisions must beat the unadapted ones.
"""
import csv
import json

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from longtail.adapt import (adapt_model, bayes_decision, bbse_prior, em_prior, estimate,
                            read_cost_matrix)
from longtail.errors import ConfigError, DataError

MU = np.array([[0.0, 0.0], [2.5, 0.0], [0.0, 2.5]])
PI = np.array([0.7, 0.2, 0.1])
Q = np.array([0.1, 0.3, 0.6])
TOL = 0.05


def _sample(prior, n, seed):
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=prior)
    return MU[y] + rng.normal(size=(n, 2)), y


def _logits(x):
    return x @ MU.T - 0.5 * (MU ** 2).sum(1) + np.log(PI)


def test_em_and_bbse_recover_a_known_shift():
    xv, yv = _sample(PI, 4000, 0)
    xt, yt = _sample(Q, 4000, 1)
    zv, zt = _logits(xv), _logits(xt)
    em = em_prior(softmax(zt, axis=1), PI)
    bbse = bbse_prior(zv.argmax(1), yv, zt.argmax(1), 3)
    np.testing.assert_allclose(em, Q, atol=TOL)
    np.testing.assert_allclose(bbse, Q, atol=TOL)
    # no shift: both stay at the training prior
    np.testing.assert_allclose(em_prior(softmax(zv, axis=1), PI), PI, atol=TOL)
    plain = (zt.argmax(1) == yt).mean()
    for q in (em, bbse, Q):
        adapted = (zt + np.log(q) - np.log(PI)).argmax(1)
        assert (adapted == yt).mean() > plain + 0.05


def test_estimate_fits_the_temperature_first():
    """An overconfident model (logits x3): EM on raw softmax is off, after T it is not."""
    xv, yv = _sample(PI, 4000, 2)
    xt, _ = _sample(Q, 4000, 3)
    zv, zt = 3 * _logits(xv), 3 * _logits(xt)
    r = estimate(zt, zv, yv, method="em", resamples=20)
    assert r["temperature"] == pytest.approx(3.0, rel=0.1)
    np.testing.assert_allclose(r["estimate"], Q, atol=TOL)
    np.testing.assert_allclose(r["bbse"]["estimate"], Q, atol=TOL)
    low, high = np.array(r["interval"]["low"]), np.array(r["interval"]["high"])
    assert np.all(low <= np.array(r["estimate"])) and np.all(np.array(r["estimate"]) <= high)
    assert np.all(high - low < 0.1)
    with pytest.raises(ConfigError, match="method"):
        estimate(zt, zv, yv, method="mle")


def test_estimate_is_right_for_a_balanced_model_too():
    """A model whose outputs are relative to a uniform prior (as after logit
    adjustment): the calibration biases absorb it, and EM still finds q."""
    xv, yv = _sample(PI, 4000, 7)
    xt, yt = _sample(Q, 4000, 8)
    zv, zt = _logits(xv) - np.log(PI), _logits(xt) - np.log(PI)
    r = estimate(zt, zv, yv, method="em", resamples=10)
    np.testing.assert_allclose(r["estimate"], Q, atol=TOL)
    np.testing.assert_allclose(r["bias"], np.log(PI) - np.log(PI).mean(), atol=0.15)
    adapted = (zt / r["temperature"] + r["bias"] + np.log(r["estimate"])
               - np.log(r["source_prior"])).argmax(1)
    assert (adapted == yt).mean() > (zt.argmax(1) == yt).mean()


def _dense(softmax_out=False):
    import keras

    inp = keras.Input((2,))
    layer = keras.layers.Dense(3, activation="softmax" if softmax_out else None)
    model = keras.Model(inp, layer(inp))
    layer.set_weights([MU.T, -0.5 * (MU ** 2).sum(1) + np.log(PI)])
    return model


@pytest.mark.parametrize("softmax_out", [False, True])
def test_adapted_model_loads_in_safe_mode_and_shifts_the_logits(tmp_path, softmax_out):
    import keras

    from longtail.models import load_model

    model = _dense(softmax_out)
    x, _ = _sample(Q, 50, 4)
    adapted = adapt_model(model, PI, Q, temperature=2.0, from_probabilities=softmax_out)
    adapted.save(tmp_path / "a.keras")
    loaded = load_model(str(tmp_path / "a.keras"))
    base = log_softmax(_logits(x), axis=1) if softmax_out else _logits(x)
    expected = base / 2.0 + np.log(Q) - np.log(PI)
    np.testing.assert_allclose(np.asarray(loaded.predict_on_batch(x)), expected, atol=1e-4)
    # and with Keras' own loader in safe mode
    keras.saving.load_model(tmp_path / "a.keras", safe_mode=True)


def test_bayes_decision_is_the_argmin_of_expected_cost():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.05, 0.15, 0.8]])
    cost = np.array([[0, 1, 1], [10, 0, 1], [1, 1, 0]])  # missing class 1 costs 10
    # expected cost of each decision, by hand (row i: sum_y p_y cost[y, d]):
    #   sample 0: d0 = .2*10 + .1 = 2.1, d1 = .7 + .1 = .8, d2 = .7 + .2 = .9  -> 1
    #   sample 1: d0 = 5 + .3 = 5.3,     d1 = .2 + .3 = .5, d2 = .2 + .5 = .7  -> 1
    #   sample 2: d0 = 1.5 + .8 = 2.3,   d1 = .05 + .8 = .85, d2 = .05 + .15 = .2 -> 2
    assert bayes_decision(probs, cost).tolist() == [1, 1, 2]
    assert bayes_decision(probs, 1 - np.eye(3)).tolist() == probs.argmax(1).tolist()
    with pytest.raises(ConfigError, match="3x3"):
        bayes_decision(probs, np.ones((2, 2)))


def test_cost_file_is_read_by_class_name(tmp_path):
    path = tmp_path / "costs.csv"
    path.write_text("true,b,a\na,1,0\nb,0,5\n")
    np.testing.assert_array_equal(read_cost_matrix(path, ["a", "b"]), [[0, 1], [5, 0]])
    path.write_text("true,a,b\na,0,x\nb,1,0\n")
    with pytest.raises(DataError, match="costs.csv: costs must be numbers"):
        read_cost_matrix(path, ["a", "b"])
    path.write_text("true,a,c\n")
    with pytest.raises(DataError, match="header"):
        read_cost_matrix(path, ["a", "b"])


def _write_table(path, x, y):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["f0", "f1", "label"])
        for row, label in zip(x, y):
            w.writerow([*row, f"c{label}"])
    return str(path)


@pytest.fixture
def run(tmp_path):
    """A run folder around the exact model: model.keras, config.json, val.parquet."""
    from longtail.dataset import Dataset

    folder = tmp_path / "run"
    folder.mkdir()
    _dense().save(folder / "model.keras")
    xv, yv = _sample(PI, 3000, 5)
    Dataset.open(_write_table(tmp_path / "val.csv", xv, yv)).save(str(folder / "val.parquet"))
    (folder / "config.json").write_text(json.dumps({
        "class_names": ["c0", "c1", "c2"], "train_counts": (PI * 1000).astype(int).tolist(),
        "val_counts": np.bincount(yv).tolist(), "strategy": "none", "options": {}}))
    xt, yt = _sample(Q, 3000, 6)
    return folder, _write_table(tmp_path / "deploy.csv", xt, yt)


def test_adapt_cli_end_to_end(run, tmp_path, capsys):
    from longtail.cli import main

    folder, deploy = run
    assert main(["adapt", str(folder), "--unlabeled", deploy, "--out",
                 str(tmp_path / "ad"), "--resamples", "20"]) == 0
    prior = json.loads((tmp_path / "ad" / "prior.json").read_text())
    assert prior["method"] == "em" and prior["classes"] == ["c0", "c1", "c2"]
    np.testing.assert_allclose(prior["estimate"], Q, atol=TOL)
    np.testing.assert_allclose(prior["bbse"]["estimate"], Q, atol=TOL)
    assert prior["temperature"] == pytest.approx(1.0, abs=0.1)  # the model is calibrated
    results = {}
    for name, model in (("plain", folder), ("adapted", tmp_path / "ad")):
        assert main(["evaluate", str(model), deploy, "--out", str(tmp_path / name),
                     "--resamples", "100"]) == 0
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert results["adapted"]["accuracy"] > results["plain"]["accuracy"] + 0.05

    assert main(["adapt", str(folder), "--unlabeled", deploy, "--out", str(tmp_path / "u"),
                 "--prior", "uniform"]) == 0
    prior = json.loads((tmp_path / "u" / "prior.json").read_text())
    assert prior["method"] == "uniform" and prior["estimate"] == pytest.approx([1 / 3] * 3)
    capsys.readouterr()
    bad = tmp_path / "p.json"
    bad.write_text('{"c9": 1}')
    assert main(["adapt", str(folder), "--unlabeled", deploy, "--out", str(tmp_path / "x"),
                 "--prior", str(bad)]) == 2
    assert "unknown classes ['c9']" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_predict_cost_makes_the_bayes_decision(tmp_path):
    """predict --cost on images: the column `predicted` is argmin of expected cost."""
    import keras
    from PIL import Image

    from longtail.predict import predict_files

    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    inp = keras.Input((4, 4, 3))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(inp)))
    cost = np.array([[0, 1, 1], [20, 0, 1], [1, 1, 0]])
    kw = dict(class_names=["a", "b", "c"], image_size=(4, 4), top_k=2)
    plain, _ = predict_files(model, paths, **kw)
    text, _ = predict_files(model, paths, cost=cost, **kw)
    plain_rows = list(csv.DictReader(plain.splitlines()))
    rows = list(csv.DictReader(text.splitlines()))
    assert list(rows[0]) == ["path", "predicted", "probability", "top2", "top2_probability",
                             "expected_cost", "error"]
    names = ["a", "b", "c"]
    for plain_row, row in zip(plain_rows, rows):
        # the probabilities of predict without costs, then the decision by hand
        p = np.zeros(3)
        p[names.index(plain_row["predicted"])] = float(plain_row["probability"])
        p[names.index(plain_row["top2"])] = float(plain_row["top2_probability"])
        p[p == 0] = 1 - p.sum()
        expected = p @ cost
        assert row["predicted"] == names[int(np.argmin(expected))]
        assert float(row["expected_cost"]) == pytest.approx(expected.min(), abs=1e-5)
