"""`longtail evaluate` and `longtail predict` on a trained run."""

import csv
import io
import json

import numpy as np
import pytest
from conftest import make_images
from sklearn import metrics as skm

import longtail as lt
from longtail.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred")
    train = make_images(root / "train", (60, 20, 6), seed=1, spread=0.5)
    test = make_images(root / "test", (15, 15, 15), seed=2, spread=0.5)
    out = root / "run"
    lt.train(train, out, epochs=3, image_size=8, augment="none", batch_size=16,
             learning_rate=3e-3, verbose=0)
    return out, train, test


def test_evaluate_command_matches_sklearn(run, tmp_path, capsys):
    out, train, test = run
    code = main(["evaluate", str(out), test, "--out", str(tmp_path / "ev")])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert (tmp_path / "ev" / "report.html").is_file()
    # Same figures by hand: predictions of the saved model over the test folder.
    import keras

    model = keras.saving.load_model(out / "model.keras")
    ds = lt.Dataset.from_directory(test)
    from longtail.decode import DecodeOptions, read_image

    x = np.stack([read_image(p, DecodeOptions(image_size=(8, 8))) for p in ds.paths])
    pred = np.argmax(model.predict(x, verbose=0), axis=1)
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(ds.labels, pred))
    assert metrics["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(ds.labels, pred))
    assert metrics["confusion_matrix"] == skm.confusion_matrix(ds.labels, pred).tolist()


def test_posthoc_tau_and_tune_tau(run, tmp_path, capsys):
    out, train, test = run
    assert main(["evaluate", str(out), test, "--out", str(tmp_path / "a")]) == 0
    assert main(["evaluate", str(out), test, "--out", str(tmp_path / "b"),
                 "--posthoc-tau", "1.0"]) == 0
    plain = json.loads((tmp_path / "a" / "metrics.json").read_text())
    adjusted = json.loads((tmp_path / "b" / "metrics.json").read_text())
    # Adjusting by the training priors moves predictions towards the rare class.
    assert adjusted["predicted_distribution"][2] >= plain["predicted_distribution"][2]
    assert adjusted["posthoc_tau"] == 1.0
    assert main(["evaluate", str(out), test, "--out", str(tmp_path / "c"), "--tune-tau"]) == 0
    assert "tuned post-hoc tau" in capsys.readouterr().out


def test_predict_rows_top_k_and_unreadable_inputs(run, tmp_path, capsys):
    out, train, test = run
    (tmp_path / "bad.png").write_bytes(b"not an image")
    target = tmp_path / "preds.csv"
    code = main(["predict", str(out), test, str(tmp_path / "bad.png"), "--top-k", "2",
                 "--out", str(target)])
    captured = capsys.readouterr()
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(rows) == 45 + 1
    assert set(rows[0]) == {"path", "predicted", "probability", "top2", "top2_probability",
                            "error"}
    bad = [r for r in rows if r["path"].endswith("bad.png")]
    assert len(bad) == 1 and bad[0]["error"] and not bad[0]["predicted"]
    assert "1 unreadable inputs" in captured.err and "bad.png" in captured.err
    good = [r for r in rows if not r["error"]]
    assert all(float(r["probability"]) >= float(r["top2_probability"]) for r in good)
    names = {"class_0", "class_1", "class_2"}
    assert {r["predicted"] for r in good} <= names


def test_evaluate_bad_model_path(tmp_path, capsys):
    code = main(["evaluate", str(tmp_path / "none"), str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no such model file" in err[0]
