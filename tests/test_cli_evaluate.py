"""CLI evaluate and predict: the tune-tau flow prints the untuned figures, pages and
metrics.json name the data measured, progress bars with an ETA that --quiet silences."""

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from sklearn.metrics import balanced_accuracy_score

import longtail as lt
from longtail.cli import main


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _table(path, n, seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, 1.2, (k, 2)) for c, k in enumerate(n)])
    y = [f"c{c}" for c, k in enumerate(n) for _ in range(k)]
    pacsv.write_csv(pa.table({"a": x[:, 0], "b": x[:, 1], "label": y}), str(path))
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    data = _table(root / "train.csv", (150, 40, 12), seed=0)
    test = _table(root / "test.csv", (30, 30, 30), seed=1)
    lt.train(data, str(root / "run"), epochs=3, verbose=0, shot_thresholds=(50, 5))
    return root, str(root / "run"), test


def _logits(run_dir, data):
    """Reference: the model's logits on DATA, computed here with plain Keras."""
    import keras

    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    ds = lt.Dataset.open(data, class_names=json.load(open(
        os.path.join(run_dir, "config.json")))["class_names"])
    out = np.asarray(model.predict(ds.features, verbose=0), dtype=np.float64)
    if np.allclose(out.sum(axis=1), 1) and (out >= 0).all():
        out = np.log(np.maximum(out, 1e-12))
    return out, ds.labels


def test_tune_tau_prints_the_untuned_figures_beside_the_tuned(run, capsys):
    root, run_dir, test = run
    out_dir = str(root / "tuned")
    assert main(["evaluate", run_dir, test, "--out", out_dir, "--tune-tau",
                 "--resamples", "20", "--quiet"]) == 0
    out = capsys.readouterr().out
    metrics = json.load(open(os.path.join(out_dir, "metrics.json")))
    tuning = metrics["tau_tuning"]
    counts = np.asarray(json.load(open(os.path.join(run_dir, "config.json")))["train_counts"])
    logits, y = _logits(run_dir, test)
    raw = balanced_accuracy_score(y, logits.argmax(axis=1))
    tuned = balanced_accuracy_score(
        y, (logits - tuning["tau"] * np.log(counts / counts.sum())).argmax(axis=1))
    assert tuning["untuned"]["balanced_accuracy"] == pytest.approx(raw)
    assert metrics["balanced_accuracy"] == pytest.approx(tuned)
    assert metrics["posthoc_tau"] == tuning["tau"]
    assert (f"tuned post-hoc tau on the validation split: {tuning['tau']:g}; with no post-hoc "
            f"tau instead: accuracy") in out
    assert f"balanced accuracy {raw:.4f}" in out and f"balanced accuracy {tuned:.4f}" in out


def test_evaluate_names_the_data_it_measured(run, capsys):
    root, run_dir, test = run
    for data, split in ((test, "test"), (os.path.join(run_dir, "val.parquet"), "validation")):
        out_dir = root / f"eval-{split}"
        assert main(["evaluate", run_dir, data, "--out", str(out_dir), "--resamples", "20",
                     "--quiet"]) == 0
        n = len(lt.Dataset.open(data))
        assert capsys.readouterr().out.startswith(f"{split} data {data} ({n} samples):")
        metrics = json.load(open(out_dir / "metrics.json"))
        assert metrics["evaluated_on"] == {"split": split, "data": data, "samples": n}
        page = (out_dir / "report.html").read_text()
        assert f"Measured on the {split} data</strong> (<code>{data}</code>, {n} samples)" in page
    # The run's own report names its validation split, the run folder's val.parquet.
    page = open(os.path.join(run_dir, "report.html")).read()
    val = os.path.join(run_dir, "val.parquet")
    assert (f"Measured on the validation data</strong> (<code>val.parquet</code>, "
            f"{len(lt.Dataset.load(val))} samples)") in page


def test_evaluate_run_is_the_library_side_of_the_command(run):
    root, run_dir, test = run
    result = lt.evaluate_run(run_dir, test, posthoc_tau=1.0, bootstrap=False)
    logits, y = _logits(run_dir, test)
    counts = np.asarray(result.run["train_counts"], dtype=float)
    expected = balanced_accuracy_score(y, (logits - np.log(counts / counts.sum())).argmax(1))
    assert result.metrics["balanced_accuracy"] == pytest.approx(expected)
    assert result.untuned is None and "calibration" in result.metrics


def test_evaluate_shows_a_progress_bar_with_eta_unless_quiet(run, capsys, monkeypatch):
    root, run_dir, test = run
    for quiet in (False, True):
        terminal = _Terminal()
        monkeypatch.setattr("sys.stderr", terminal)
        assert main(["evaluate", run_dir, test, "--out", str(root / "bar"), "--batch-size",
                     "8", "--resamples", "20"] + (["--quiet"] if quiet else [])) == 0
        shown = terminal.getvalue()
        if quiet:
            assert "evaluating" not in shown
        else:  # 90 samples in batches of 8: 12 steps, with the time left
            assert "evaluating" in shown and "/12 [" in shown and "<" in shown


def test_progress_bars_only_on_a_terminal_and_for_more_than_one_step(monkeypatch):
    from longtail._progress import progress_bar

    for stream, steps, shown in ((_Terminal(), 5, True), (io.StringIO(), 5, False),
                                 (_Terminal(), 1, False)):
        monkeypatch.setattr("sys.stderr", stream)
        assert list(progress_bar(range(steps), desc="work")) == list(range(steps))
        assert ("work" in stream.getvalue()) == shown
        assert shown or stream.getvalue() == ""  # no carriage-return frames in a log file


def test_predict_shows_a_progress_bar_unless_quiet(tmp_path, monkeypatch):
    import keras
    from PIL import Image

    from longtail.predict import predict_files

    paths = []
    for i in range(10):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((4, 4, 3), i * 20, np.uint8)).save(paths[-1])
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    for progress in (True, False):
        terminal = _Terminal()
        monkeypatch.setattr("sys.stderr", terminal)
        text, failed = predict_files(model, paths, class_names=["a", "b"], image_size=(4, 4),
                                     batch_size=3, progress=progress)
        assert len(text.splitlines()) == 11 and not failed
        assert ("predicting" in terminal.getvalue() and "/4 [" in terminal.getvalue()) \
            == progress


def test_the_run_report_uses_the_runs_shot_thresholds(run):
    root, run_dir, _ = run
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    counts = json.load(open(os.path.join(run_dir, "config.json")))["train_counts"]
    assert metrics["shot_thresholds"] == [50, 5] and counts == [120, 32, 10]
    assert [r["shot"] for r in metrics["per_class"]] == ["many", "medium", "medium"]
    assert "many-shot accuracy (&gt; 50 training samples)" in open(
        os.path.join(run_dir, "report.html")).read()
